//! upstream's default filter and score plugins, as pure functions over typed objects and
//! the cache; `Plugin` names them (for messages and for which events may help a pod).

use std::borrow::Cow;

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_basics;
pub mod resources_fit;
pub mod taints;
pub mod topology_spread;

/// The filter plugins, in upstream's default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plugin {
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    VolumeBinding,
    PodTopologySpread,
    InterPodAffinity,
}

/// upstream's status codes for a filter failure: `Unresolvable` is
/// UnschedulableAndUnresolvable (preempting pods on that node cannot help).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    Unresolvable,
}

/// Why one node was refused by one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub plugin: Plugin,
    pub code: Code,
    /// The reasons (most often one, and a constant): a decision rejects most nodes of a
    /// cluster for a spread pod, and is usually followed by a placement that reads none.
    first: Cow<'static, str>,
    more: Vec<String>,
}

impl Rejection {
    pub fn new(plugin: Plugin, code: Code, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            plugin,
            code,
            first: reason.into(),
            more: Vec::new(),
        }
    }

    /// A rejection for several reasons (at least one).
    pub fn with_reasons(plugin: Plugin, code: Code, mut reasons: Vec<String>) -> Rejection {
        let first = if reasons.is_empty() {
            Cow::Borrowed("")
        } else {
            Cow::Owned(reasons.remove(0))
        };
        Rejection {
            plugin,
            code,
            first,
            more: reasons,
        }
    }

    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.as_ref()).chain(self.more.iter().map(String::as_str))
    }

    #[cfg(test)]
    pub fn reason_list(&self) -> Vec<&str> {
        self.reasons().collect()
    }
}

pub const MAX_NODE_SCORE: i64 = 100;

/// upstream `helper.DefaultNormalizeScore`: scale to [0, 100] by the maximum, reversed if asked.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::Value;

    use crate::cache::{Cache, PodInfo};

    pub fn pod(v: Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    pub fn info(v: Value) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(pod(v)))
    }

    pub fn node(v: Value) -> Arc<Node> {
        Arc::new(serde_json::from_value(v).expect("node"))
    }

    /// A cache with nodes `(name, labels)` of 4 cpu / 8Gi / 110 pods.
    pub fn cache(nodes: &[(&str, Value)]) -> Cache {
        let mut c = Cache::default();
        for (name, labels) in nodes {
            c.upsert_node(node(serde_json::json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
            })));
        }
        c
    }
}
