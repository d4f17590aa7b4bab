//! What a Job's last sync did that the shared pod informer has not shown yet (upstream's
//! ControllerExpectations and finalizer expectations): pods created and deleted, tracking
//! finalizers removed. Until they are seen, no pods are made or removed and pods whose
//! finalizer went are not counted again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::has_tracking_finalizer;
use crate::cached_pod::Pod;

/// Expectations older than this are dropped (upstream's ExpectationsTimeout), so a pod
/// that vanished before anyone saw it cannot block its Job for ever.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Entry {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    rm_finalizers: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Entry>>,
}

impl Expectations {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(key.to_string()).or_default();
        e.since.get_or_insert_with(Instant::now);
        f(e)
    }

    pub fn created(&self, key: &str, pod_name: &str) {
        self.with(key, |e| e.creates.insert(pod_name.to_string()));
    }

    pub fn deleted(&self, key: &str, uid: &str) {
        self.with(key, |e| e.deletes.insert(uid.to_string()));
    }

    pub fn finalizer_removed(&self, key: &str, uid: &str) {
        self.with(key, |e| e.rm_finalizers.insert(uid.to_string()));
    }

    /// Drop what `pods` (the Job's pods in the informer) show done. Returns whether pod
    /// creations and deletions are all seen, and the uids whose finalizer removal is not.
    pub fn observe(&self, key: &str, pods: &[Arc<Pod>]) -> (bool, HashSet<String>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = m.get_mut(key) else {
            return (true, HashSet::new());
        };
        let by_uid: HashMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
            .collect();
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        e.creates.retain(|n| !names.contains(n.as_str()));
        e.deletes.retain(|u| {
            by_uid
                .get(u.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        e.rm_finalizers.retain(|u| {
            by_uid
                .get(u.as_str())
                .is_some_and(|p| has_tracking_finalizer(p))
        });
        if e.since.is_some_and(|s| s.elapsed() > TIMEOUT) {
            e.creates.clear();
            e.deletes.clear();
        }
        let satisfied = e.creates.is_empty() && e.deletes.is_empty();
        let rm = e.rm_finalizers.clone();
        if satisfied && rm.is_empty() {
            m.remove(key);
        }
        (satisfied, rm)
    }

    pub fn forget(&self, key: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }
}
