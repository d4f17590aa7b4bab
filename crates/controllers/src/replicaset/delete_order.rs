//! Which pods a scale-down removes first (upstream's ActivePodsWithRanks): unassigned before
//! assigned, Pending < Unknown < Running, not ready before ready, doubled-up on a node first,
//! lower `pod-deletion-cost` first, ready for less time, more restarts, newer first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::cached_pod::Pod;
use crate::pods;

const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_rank(p: &Pod) -> u8 {
    match pods::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// `pods` ordered most-deletable first; `related` are all active pods of the owner (for the
/// doubled-up rank: how many of them share the pod's node).
pub fn order_for_deletion(mut candidates: Vec<Arc<Pod>>, related: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, i32> = HashMap::new();
    for p in related {
        if !node(p).is_empty() {
            *per_node.entry(node(p)).or_default() += 1;
        }
    }
    let rank = |p: &Pod| per_node.get(node(p)).copied().unwrap_or(0);
    candidates.sort_by(|a, b| less(a, b, rank(a), rank(b)));
    candidates
}

fn less(a: &Pod, b: &Pod, rank_a: i32, rank_b: i32) -> Ordering {
    // Each step: `Less` means `a` goes first.
    let assigned = |p: &Pod| !node(p).is_empty();
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| cost(a).cmp(&cost(b)))
        .then_with(|| match (pods::ready_since(a), pods::ready_since(b)) {
            // Ready for less time (a later transition) goes first.
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<&str>, created: &str) -> Pod {
        let mut conds = vec![];
        if let Some(t) = ready {
            conds.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": t}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": conds}
        }))
        .unwrap()
    }

    #[test]
    fn upstream_order() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:01:00Z";
        let pods: Vec<Arc<Pod>> = [
            pod("ready-old", "n1", "Running", Some(t0), t0),
            pod("ready-new", "n2", "Running", Some(t1), t0),
            pod("running-unready", "n3", "Running", None, t0),
            pod("pending", "n4", "Pending", None, t0),
            pod("unassigned", "", "Pending", None, t0),
            pod("newer-unready", "n5", "Running", None, t1),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let names: Vec<String> = order_for_deletion(pods.clone(), &pods)
            .into_iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "unassigned",
                "pending",
                "newer-unready",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
    }
}
