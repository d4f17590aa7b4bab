//! NodeResourcesFit: requests against allocatable minus what is placed (filter), and the
//! LeastAllocated and BalancedAllocation scores over cpu and memory (weight 1 each).

use super::{Code, Plugin, Rejection, MAX_NODE_SCORE};
use crate::cache::{NodeInfo, PodInfo};
use crate::resources::Resources;

/// upstream `fitsRequest`; `extra` is what higher-priority pods nominated to this node
/// will take. Every insufficient resource is a reason; a request larger than the whole
/// node is unresolvable (evicting pods cannot help).
pub fn filter(
    pod: &PodInfo,
    node: &NodeInfo,
    extra: Option<&(usize, Resources)>,
) -> Result<(), Rejection> {
    // Only a node with nominated pods needs a combined copy.
    let combined;
    let mut pods = node.pods.len() as i64;
    let requested = match extra {
        Some((n, r)) => {
            let mut c = node.requested.clone();
            c.add(r);
            pods += *n as i64;
            combined = c;
            &combined
        }
        None => &node.requested,
    };
    let alloc = &node.allocatable;
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    if pods + 1 > alloc.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    let mut check = |name: &str, want: i64, have: i64, used: i64| {
        if want > 0 && want > have - used {
            reasons.push(format!("Insufficient {name}"));
            unresolvable |= want > have;
        }
    };
    check("cpu", req.milli_cpu, alloc.milli_cpu, requested.milli_cpu);
    check("memory", req.memory, alloc.memory, requested.memory);
    check(
        "ephemeral-storage",
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        requested.ephemeral_storage,
    );
    for (name, want) in &req.scalar {
        check(name, *want, alloc.scalar(name), requested.scalar(name));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Rejection::with_reasons(
        Plugin::NodeResourcesFit,
        if unresolvable {
            Code::Unresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
    ))
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated over the non-zero requests (upstream's default scoring strategy).
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (node.non_zero.0 + pod.non_zero.0, node.allocatable.milli_cpu),
        (node.non_zero.1 + pod.non_zero.1, node.allocatable.memory),
    ];
    let (mut sum, mut weights) = (0, 0);
    for (req, cap) in pairs {
        if cap == 0 {
            continue;
        }
        sum += least_requested(req, cap);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        sum / weights
    }
}

/// BalancedAllocation over the actual requests; None (skipped) for a pod requesting neither.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> Option<i64> {
    if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
        return None;
    }
    let pairs = [
        (
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        ),
    ];
    let fractions: Vec<f64> = pairs
        .iter()
        .filter(|(_, cap)| *cap != 0)
        .map(|(req, cap)| (*req as f64 / *cap as f64).min(1.0))
        .collect();
    let std = if fractions.len() == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    Some(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache, info};
    use serde_json::json;

    fn p(uid: &str, req: serde_json::Value) -> std::sync::Arc<PodInfo> {
        info(
            json!({"metadata": {"name": uid, "uid": uid}, "spec": {"containers": [{"name": "c", "resources": {"requests": req}}]}}),
        )
    }

    #[test]
    fn insufficient_resources_are_each_named() {
        let mut c = cache(&[("n", json!({}))]);
        c.assume(p("a", json!({"cpu": "3", "memory": "1Gi"})), "n");
        let n = c.node("n").unwrap();
        assert!(filter(&p("b", json!({"cpu": "1"})), n, None).is_ok());
        let e = filter(
            &p(
                "b",
                json!({"cpu": "2", "memory": "8Gi", "example.com/gpu": "1"}),
            ),
            n,
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.reason_list(),
            vec![
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient example.com/gpu"
            ]
        );
        // 8Gi fits an empty node: evicting could help... but the gpu never can.
        assert_eq!(e.code, Code::Unresolvable);
        let e = filter(&p("b", json!({"cpu": "2"})), n, None).unwrap_err();
        assert_eq!(e.code, Code::Unschedulable);
        // Nominated pods of higher priority count as placed.
        let extra = (
            1,
            crate::resources::Resources {
                milli_cpu: 1000,
                ..Default::default()
            },
        );
        assert!(filter(&p("b", json!({"cpu": "1"})), n, Some(&extra)).is_err());
    }

    #[test]
    fn pod_count_limit() {
        let mut c = crate::cache::Cache::default();
        c.upsert_node(crate::plugins::testing::node(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "pods": "1"}}})));
        assert!(filter(&p("a", json!({})), c.node("n").unwrap(), None).is_ok());
        c.assume(p("a", json!({})), "n");
        assert_eq!(
            filter(&p("b", json!({})), c.node("n").unwrap(), None)
                .unwrap_err()
                .reason_list(),
            vec!["Too many pods"]
        );
    }

    #[test]
    fn least_and_balanced_scores_match_upstream_arithmetic() {
        let mut c = cache(&[("n", json!({}))]);
        c.assume(p("a", json!({"cpu": "1", "memory": "2Gi"})), "n");
        let n = c.node("n").unwrap();
        let pod = p("b", json!({"cpu": "1", "memory": "2Gi"}));
        // cpu (4000-2000)/4000 = 50, memory (8-4)/8 = 50.
        assert_eq!(least_allocated(&pod, n), 50);
        assert_eq!(balanced_allocation(&pod, n), Some(100));
        let skewed = p("c", json!({"cpu": "3"}));
        // cpu 4000/4000 = 1, memory 2/8 = 0.25: std 0.375 -> 62.
        assert_eq!(balanced_allocation(&skewed, n), Some(62));
        assert_eq!(balanced_allocation(&p("d", json!({})), n), None);
        // A request-less pod still counts 100m / 200Mi for LeastAllocated.
        let empty = crate::plugins::testing::cache(&[("m", json!({}))]);
        assert_eq!(
            least_allocated(&p("d", json!({})), empty.node("m").unwrap()),
            (97 + 97) / 2
        );
    }
}
