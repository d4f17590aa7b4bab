//! Upstream's ControllerExpectations: the pods a sync created or deleted that the shared
//! informer has not shown yet, so the next sync does not create or delete them twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::cached_pod::Pod;

/// Expectations older than this are dropped (upstream's ExpectationsTimeout), so a lost
/// watch event cannot stall a controller forever.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    adds: HashSet<String>,
    dels: HashSet<String>,
    since: Option<Instant>,
}

/// Per owner key (`namespace/name`): pod names awaited.
#[derive(Default)]
pub struct Expectations {
    m: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        let mut m = self.m.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut m)
    }

    pub fn expect_add(&self, key: &str, pod: &str) {
        self.with(|m| {
            let p = m.entry(key.to_string()).or_default();
            p.since.get_or_insert_with(Instant::now);
            p.adds.insert(pod.to_string());
        })
    }

    pub fn expect_delete(&self, key: &str, pod: &str) {
        self.with(|m| {
            let p = m.entry(key.to_string()).or_default();
            p.since.get_or_insert_with(Instant::now);
            p.dels.insert(pod.to_string());
        })
    }

    /// A delete that failed will not be observed.
    pub fn forget_delete(&self, key: &str, pod: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(key) {
                p.dels.remove(pod);
            }
        })
    }

    /// The informer showed `pod` (any change, including its deletion) for owner `key`.
    pub fn observed(&self, key: &str, pod: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(key) {
                p.adds.remove(pod);
            }
        })
    }

    /// Whether every create and delete of `key` is visible in `pods` (upstream's
    /// SatisfiedExpectations); satisfied expectations are forgotten.
    pub fn satisfied(&self, key: &str, namespace: &str, pods: &Store<Pod>) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(key) else {
                return true;
            };
            let get = |name: &str| pods.get(&ObjectRef::new(name).within(namespace));
            p.adds.retain(|n| get(n).is_none());
            p.dels
                .retain(|n| get(n).is_some_and(|pod| pod.metadata.deletion_timestamp.is_none()));
            let expired = p.since.is_some_and(|s| s.elapsed() > TIMEOUT);
            if expired || (p.adds.is_empty() && p.dels.is_empty()) {
                m.remove(key);
                return true;
            }
            false
        })
    }

    /// The owner is gone.
    pub fn forget(&self, key: &str) {
        self.with(|m| {
            m.remove(key);
        })
    }
}
