//! One scheduling decision over the cache: pre-filter state, filters in upstream's order over
//! an adaptive share of the nodes, weighted scores, and the pick among the best.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodSpec, Toleration};
use rand::RngExt;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::plugins::{
    default_normalize, inter_pod_affinity, node_affinity, node_basics, resources_fit, taints,
    topology_spread, Rejection,
};
use crate::resources::Resources;

/// upstream's default score plugin weights.
const WEIGHT_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_POD_AFFINITY: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_TAINTS: i64 = 3;

/// Resources that pods nominated to a node (by preemption) will take: (count, sum).
pub type Nominated = (usize, Resources);

/// What is computed once per pod per cycle (upstream's CycleState after PreFilter).
pub struct Cycle<'c> {
    pub pod: Arc<PodInfo>,
    affinity: inter_pod_affinity::FilterState<'c>,
    spread: topology_spread::FilterState<'c>,
    /// Node selectors of the volumes the pod's bound claims name (usually none).
    volume_affinity: Vec<k8s_openapi::api::core::v1::NodeSelector>,
}

impl<'c> Cycle<'c> {
    pub fn new(pod: Arc<PodInfo>, cache: &'c Cache) -> Cycle<'c> {
        let affinity = inter_pod_affinity::prefilter(&pod, &pod.terms, cache);
        let spread = topology_spread::prefilter(&pod, crate::cache::spec_of(&pod.pod), cache);
        Cycle {
            pod,
            affinity,
            spread,
            volume_affinity: Vec::new(),
        }
    }

    /// The pod's bound volumes may only be reached from the nodes their affinity names.
    pub fn with_volume_affinity(
        mut self,
        affinity: Vec<k8s_openapi::api::core::v1::NodeSelector>,
    ) -> Cycle<'c> {
        self.volume_affinity = affinity;
        self
    }

    fn spec(&self) -> &PodSpec {
        crate::cache::spec_of(&self.pod.pod)
    }

    fn tolerations(&self) -> &[Toleration] {
        self.spec().tolerations.as_deref().unwrap_or(&[])
    }

    /// The filter plugins in upstream's order; the first refusal is the node's reason.
    pub fn filter(&self, node: &NodeInfo, nominated: Option<&Nominated>) -> Result<(), Rejection> {
        let Some(n) = node.node.as_deref() else {
            return Err(Rejection::new(
                crate::plugins::Plugin::NodeName,
                crate::plugins::Code::Unresolvable,
                "node(s) not found",
            ));
        };
        node_basics::node_unschedulable(self.spec(), n)?;
        node_basics::node_name(self.spec(), n)?;
        let node_taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        taints::filter(node_taints, self.tolerations())?;
        node_affinity::filter(self.spec(), n)?;
        node_basics::node_ports(&self.pod.host_ports, node)?;
        resources_fit::filter(&self.pod, node, nominated)?;
        if !self.volume_affinity.is_empty() {
            crate::volumes::filter(&self.volume_affinity, n)?;
        }
        topology_spread::filter(&self.spread, node)?;
        inter_pod_affinity::filter(&self.affinity, node)?;
        Ok(())
    }

    /// Weighted, normalised totals for each feasible node (upstream's default profile).
    pub fn score(&self, cache: &Cache, feasible: &[&NodeInfo]) -> Vec<i64> {
        let mut total = vec![0i64; feasible.len()];
        let nodes = || {
            feasible
                .iter()
                .map(|n| n.node.as_deref().expect("feasible nodes exist"))
        };
        for (t, n) in total.iter_mut().zip(feasible) {
            *t += WEIGHT_FIT * resources_fit::least_allocated(&self.pod, n);
            *t += WEIGHT_BALANCED * resources_fit::balanced_allocation(&self.pod, n).unwrap_or(0);
        }
        let mut aff: Vec<i64> = nodes()
            .map(|n| node_affinity::score(self.spec(), n))
            .collect();
        default_normalize(&mut aff, false);
        let mut tt: Vec<i64> = nodes()
            .map(|n| {
                taints::score(
                    n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_deref())
                        .unwrap_or(&[]),
                    self.tolerations(),
                )
            })
            .collect();
        default_normalize(&mut tt, true);
        let ipa = match inter_pod_affinity::prescore(&self.pod, &self.pod.terms, cache) {
            Some(pairs) => {
                let mut s: Vec<i64> = feasible
                    .iter()
                    .map(|n| inter_pod_affinity::score(&pairs, n))
                    .collect();
                inter_pod_affinity::normalize(&mut s);
                s
            }
            None => vec![0; feasible.len()],
        };
        let spread = match topology_spread::prescore(&self.pod, self.spec(), cache, feasible) {
            Some(state) => {
                let raw: Vec<Option<i64>> = feasible
                    .iter()
                    .map(|n| topology_spread::score(&state, n))
                    .collect();
                topology_spread::normalize(&raw)
            }
            None => vec![0; feasible.len()],
        };
        for i in 0..total.len() {
            total[i] += WEIGHT_NODE_AFFINITY * aff[i]
                + WEIGHT_TAINTS * tt[i]
                + WEIGHT_POD_AFFINITY * ipa[i]
                + WEIGHT_SPREAD * spread[i];
        }
        total
    }
}

/// upstream `numFeasibleNodesToFind` with the adaptive percentage (percentageOfNodesToScore
/// unset): all of up to 100 nodes, else 50% minus 1% per 125 nodes, at least 5% and 100.
pub fn num_feasible_nodes_to_find(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let pct = 50usize.saturating_sub(all / 125).max(5);
    (all * pct / 100).max(100)
}

/// The outcome of filtering: feasible nodes and each refused node's reason.
pub struct Filtered<'c> {
    pub feasible: Vec<&'c NodeInfo>,
    pub rejected: Vec<(&'c str, Rejection)>,
    pub processed: usize,
}

/// Filter from `start` round the node list until enough feasible nodes are found.
pub fn find_feasible<'c>(
    cycle: &Cycle<'_>,
    cache: &'c Cache,
    start: usize,
    nominated: &HashMap<String, Nominated>,
) -> Filtered<'c> {
    let slots = cache.node_slots();
    let all = slots.len();
    let want = num_feasible_nodes_to_find(cache.node_count());
    let mut out = Filtered {
        feasible: Vec::new(),
        rejected: Vec::new(),
        processed: 0,
    };
    for i in 0..all {
        if out.feasible.len() >= want {
            break;
        }
        let node = &slots[(start + i) % all];
        if node.node.is_none() {
            continue;
        }
        out.processed += 1;
        match cycle.filter(node, nominated.get(&node.name)) {
            Ok(()) => out.feasible.push(node),
            Err(r) => out.rejected.push((node.name.as_str(), r)),
        }
    }
    out
}

/// The highest total; ties broken at random (reservoir sampling, as upstream).
pub fn select_host(scores: &[i64]) -> usize {
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 0u32;
    for (i, s) in scores.iter().enumerate() {
        if i == 0 || *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache, info, node};
    use serde_json::json;

    #[test]
    fn adaptive_share_of_nodes() {
        assert_eq!(num_feasible_nodes_to_find(3), 3);
        assert_eq!(num_feasible_nodes_to_find(150), 100);
        assert_eq!(num_feasible_nodes_to_find(1000), 420);
        assert_eq!(num_feasible_nodes_to_find(5000), 500);
        assert_eq!(num_feasible_nodes_to_find(10000), 500);
    }

    #[test]
    fn filters_run_in_order_and_scores_prefer_the_emptier_node() {
        let mut c = cache(&[("a", json!({})), ("b", json!({}))]);
        c.upsert_node(node(json!({"metadata": {"name": "t"}, "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})));
        c.assume(
            info(
                json!({"metadata": {"name": "x", "uid": "x"}, "spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]}}),
            ),
            "a",
        );
        let p = info(
            json!({"metadata": {"name": "p", "uid": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
        );
        let cycle = Cycle::new(p, &c);
        let f = find_feasible(&cycle, &c, 0, &HashMap::new());
        assert_eq!(
            f.feasible.iter().map(|n| n.name()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(
            f.rejected[0].1.reason_list(),
            vec!["node(s) had untolerated taint {k: v}"]
        );
        let scores = cycle.score(&c, &f.feasible);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(select_host(&scores), 1);
    }
}
