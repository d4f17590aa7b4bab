//! The shared state: cache, queue and nominations behind one lock, updated by the watches
//! and read by the scheduling loop; plus the wake-up signal for the loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use tokio::sync::Notify;

use crate::cache::{Cache, PodInfo};
use crate::framework::Nominated;
use crate::queue::Queue;
use crate::resources::Resources;

/// Pods that preempted and wait for room on a node (upstream's nominator).
#[derive(Debug, Default)]
pub struct Nominations {
    by_pod: HashMap<String, (String, i32, Resources)>,
}

impl Nominations {
    pub fn set(&mut self, info: &PodInfo, node: &str) {
        self.by_pod.insert(
            info.uid.clone(),
            (node.to_string(), info.priority, info.requests.clone()),
        );
    }

    pub fn remove(&mut self, uid: &str) -> Option<String> {
        self.by_pod.remove(uid).map(|(n, _, _)| n)
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.by_pod.get(uid).map(|(n, _, _)| n.as_str())
    }

    /// What pods of at least `priority` (other than `uid`) will take on each node.
    pub fn for_pod(&self, uid: &str, priority: i32) -> HashMap<String, Nominated> {
        let mut out: HashMap<String, Nominated> = HashMap::new();
        for (k, (node, prio, req)) in &self.by_pod {
            if k != uid && *prio >= priority {
                let e = out.entry(node.clone()).or_default();
                e.0 += 1;
                e.1.add(req);
            }
        }
        out
    }

    /// Lower-priority pods nominated to `node` (their nomination is cleared by preemption).
    pub fn lower_on(&self, node: &str, priority: i32) -> Vec<String> {
        self.by_pod
            .iter()
            .filter(|(_, (n, p, _))| n == node && *p < priority)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub cache: Cache,
    pub queue: Queue,
    pub nominations: Nominations,
    pub pdbs: HashMap<String, Arc<PodDisruptionBudget>>,
    /// Where the next filtering pass starts (upstream's nextStartNodeIndex).
    pub next_start: usize,
    /// Pods seen unscheduled, by uid, so a relist can tell what disappeared.
    pub unscheduled_seen: HashMap<String, Arc<Pod>>,
}

#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<State>,
    pub wake: Notify,
    /// Pods bound since start (for the progress log).
    pub bound: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock poisons it; the state is still consistent enough
        // to keep scheduling (every update is a whole step), so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
