//! A DaemonSet's rolling update (upstream's daemon/update.go rollingUpdate): without surge,
//! old pods go while at most maxUnavailable nodes lack an available daemon; with surge, a
//! new pod starts beside the old one on up to maxSurge nodes and the old one goes once the
//! new one is available.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::RollingUpdateDaemonSet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::{label, NodeView, HASH_LABEL};
use crate::cached_pod::Pod;
use crate::pods;

/// An int-or-percent against `total`, percentages rounded up (GetScaledValueFromIntOrPercent).
fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) for `desired` nodes; both zero means one unavailable.
pub fn limits(ru: Option<&RollingUpdateDaemonSet>, desired: i32) -> (i32, i32) {
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0).max(0);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub struct Limits {
    pub max_surge: i32,
    pub max_unavailable: i32,
    pub min_ready: i32,
}

/// Which of a node's pods (oldest first) stay when there are several: the oldest one; with
/// surge, the oldest updated one, and also the oldest old one until the updated one is
/// available.
pub fn keep_on_node(
    pods_on_node: &[Pod],
    hash: &str,
    surge: bool,
    min_ready: i32,
    now: Timestamp,
) -> Vec<usize> {
    if !surge {
        return vec![0];
    }
    let new = pods_on_node
        .iter()
        .position(|p| label(p, HASH_LABEL) == hash);
    let old = pods_on_node
        .iter()
        .position(|p| label(p, HASH_LABEL) != hash);
    match (new, old) {
        (Some(n), Some(o)) if !pods::is_available(&pods_on_node[n], min_ready, now) => vec![n, o],
        (Some(n), _) => vec![n],
        (None, Some(o)) => vec![o],
        (None, None) => vec![0],
    }
}

#[derive(Default)]
pub struct Plan {
    pub delete: Vec<Pod>,
    pub surge_on: Vec<String>,
}

pub fn plan(
    views: &[NodeView],
    hash: &str,
    l: &Limits,
    pending: &HashSet<String>,
    now: Timestamp,
) -> Plan {
    let avail = |p: &Pod| pods::is_available(p, l.min_ready, now);
    let mut plan = Plan::default();
    let eligible = views.iter().filter(|v| v.should_run);
    if l.max_surge == 0 {
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for v in eligible {
            let new = v.pods.iter().find(|p| label(p, HASH_LABEL) == hash);
            let old = v.pods.iter().find(|p| label(p, HASH_LABEL) != hash);
            match (new, old) {
                (None, None) => unavailable += 1,
                (Some(n), _) => {
                    if !avail(n) {
                        unavailable += 1
                    }
                }
                (None, Some(o)) if !avail(o) => {
                    // Already unavailable: replacing it costs nothing.
                    plan.delete.push(o.clone());
                    unavailable += 1;
                }
                (None, Some(o)) => candidates.push(o.clone()),
            }
        }
        let allowed = (l.max_unavailable - unavailable).max(0) as usize;
        plan.delete.extend(candidates.into_iter().take(allowed));
    } else {
        let mut surging = 0;
        let mut candidates = Vec::new();
        for v in eligible {
            let new = v.pods.iter().find(|p| label(p, HASH_LABEL) == hash);
            let old = v.pods.iter().find(|p| label(p, HASH_LABEL) != hash);
            match (new, old) {
                (Some(n), Some(o)) => {
                    if avail(n) {
                        plan.delete.push(o.clone());
                    } else {
                        surging += 1;
                    }
                }
                (None, Some(_)) if pending.contains(&v.name) => surging += 1,
                // An old pod that is not available anyway is replaced at once.
                (None, Some(o)) if !avail(o) => plan.surge_on.push(v.name.clone()),
                (None, Some(_)) => candidates.push(v.name.clone()),
                _ => {}
            }
        }
        let allowed = (l.max_surge - surging).max(0) as usize;
        plan.surge_on.extend(candidates.into_iter().take(allowed));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {HASH_LABEL: hash}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn view(name: &str, pods: Vec<Pod>) -> NodeView {
        NodeView {
            name: name.into(),
            should_run: true,
            should_continue: true,
            pods,
        }
    }

    #[test]
    fn limits_round_percentages_up() {
        let ru: RollingUpdateDaemonSet =
            serde_json::from_value(json!({"maxSurge": "25%", "maxUnavailable": 0})).unwrap();
        assert_eq!(limits(Some(&ru), 10), (3, 0));
        assert_eq!(limits(None, 10), (0, 1));
    }

    #[test]
    fn without_surge_old_pods_go_within_the_budget() {
        let now = Timestamp::now();
        let views = vec![
            view("a", vec![pod("a", "old", true)]),
            view("b", vec![pod("b", "old", true)]),
            view("c", vec![pod("c", "old", false)]),
        ];
        let l = Limits {
            max_surge: 0,
            max_unavailable: 2,
            min_ready: 0,
        };
        let p = plan(&views, "new", &l, &HashSet::new(), now);
        // c is unavailable (replaced at once, using one of the two), then one more.
        let names: Vec<_> = p
            .delete
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert!(p.surge_on.is_empty());
    }

    #[test]
    fn with_surge_new_pods_start_beside_old_ones() {
        let now = Timestamp::now();
        let views = vec![
            view("a", vec![pod("a", "old", true), pod("a2", "new", true)]),
            view("b", vec![pod("b", "old", true), pod("b2", "new", false)]),
            view("c", vec![pod("c", "old", true)]),
            view("d", vec![pod("d", "old", true)]),
        ];
        let l = Limits {
            max_surge: 2,
            max_unavailable: 0,
            min_ready: 0,
        };
        let p = plan(&views, "new", &l, &HashSet::new(), now);
        let names: Vec<_> = p
            .delete
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
        assert_eq!(p.surge_on, ["c"]);
        assert_eq!(
            keep_on_node(&views[1].pods, "new", true, 0, now),
            vec![1, 0]
        );
        assert_eq!(keep_on_node(&views[0].pods, "new", true, 0, now), vec![1]);
    }
}
