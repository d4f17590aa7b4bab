//! The shared pod informer's index by controller (upstream's controller-UID pod indexer):
//! the objects each controller uid controls, and per namespace those no controller owns, so
//! a sync reads its own pods instead of every pod of the cluster. It holds the store's own
//! `Arc`s (no copies of objects).

use std::collections::HashMap;
use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;

use crate::owners::controller_of;

/// Orphans are kept under their namespace, behind a byte no uid holds.
fn orphan_key(ns: &str) -> String {
    format!("\0{ns}")
}

fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match controller_of(meta) {
        Some(r) => r.uid.clone(),
        None => orphan_key(meta.namespace.as_deref().unwrap_or("")),
    }
}

fn ref_of<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let meta = obj.meta();
    let r = ObjectRef::new(meta.name.as_deref().unwrap_or(""));
    match meta.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

type Entries<K> = HashMap<ObjectRef<K>, Arc<K>>;

pub struct OwnerIndex<K: Resource<DynamicType = ()>> {
    by_key: HashMap<String, Entries<K>>,
}

impl<K: Resource<DynamicType = ()>> Default for OwnerIndex<K> {
    fn default() -> Self {
        OwnerIndex {
            by_key: HashMap::new(),
        }
    }
}

impl<K> OwnerIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn remove(&mut self, key: &str, r: &ObjectRef<K>) {
        if let Some(set) = self.by_key.get_mut(key) {
            set.remove(r);
            if set.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    fn insert(&mut self, obj: Arc<K>) {
        let r = ref_of(&*obj);
        self.by_key.entry(key_of(&*obj)).or_default().insert(r, obj);
    }

    /// Before the store applies `event`: forget where the object was (the store still holds
    /// its previous version, so a changed controller is found).
    pub fn before(&mut self, event: &watcher::Event<K>, store: &Store<K>) {
        if let watcher::Event::Apply(obj) | watcher::Event::Delete(obj) = event {
            let r = ref_of(obj);
            if let Some(old) = store.get(&r) {
                self.remove(&key_of(&*old), &r);
            }
            self.remove(&key_of(obj), &r);
        }
    }

    /// After the store applied `event`: file the stored object; a finished relist (which the
    /// store swaps in whole) is filed anew.
    pub fn after(&mut self, event: &watcher::Event<K>, store: &Store<K>) {
        match event {
            watcher::Event::Apply(obj) => {
                if let Some(stored) = store.get(&ref_of(obj)) {
                    self.insert(stored);
                }
            }
            watcher::Event::InitDone => {
                self.by_key.clear();
                for obj in store.state() {
                    self.insert(obj);
                }
            }
            _ => {}
        }
    }

    /// The objects controlled by `uid` (in `ns`: a reference from elsewhere is not valid).
    pub fn controlled_by(&self, ns: &str, uid: &str) -> Vec<Arc<K>> {
        self.by_key
            .get(uid)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|o| o.meta().namespace.as_deref().unwrap_or("") == ns)
            .cloned()
            .collect()
    }

    /// The objects of `ns` no controller owns that `keep` accepts.
    pub fn orphans_in(&self, ns: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.by_key
            .get(&orphan_key(ns))
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::reflector;
    use serde_json::json;

    fn pod(name: &str, owner: Option<&str>) -> Pod {
        let refs = owner.map(|uid| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}])
        });
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}}),
        )
        .unwrap()
    }

    fn names(objs: Vec<Arc<Pod>>) -> Vec<String> {
        let mut v: Vec<String> = objs
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn follows_adoption_release_deletion_and_relists() {
        let (store, mut writer) = reflector::store::<Pod>();
        let mut ix = OwnerIndex::default();
        let mut step = |ix: &mut OwnerIndex<Pod>, ev: watcher::Event<Pod>| {
            ix.before(&ev, &store);
            writer.apply_watcher_event(&ev);
            ix.after(&ev, &store);
        };
        let all = |_: &Pod| true;
        step(&mut ix, watcher::Event::Init);
        step(&mut ix, watcher::Event::InitApply(pod("a", Some("u1"))));
        step(&mut ix, watcher::Event::InitApply(pod("b", None)));
        step(&mut ix, watcher::Event::InitDone);
        assert_eq!(names(ix.controlled_by("ns", "u1")), ["a"]);
        assert_eq!(names(ix.orphans_in("ns", all)), ["b"]);
        assert!(ix.controlled_by("other", "u1").is_empty());
        // The index holds the store's objects, not copies.
        let held = ix.controlled_by("ns", "u1");
        let stored = store.get(&ObjectRef::new("a").within("ns")).unwrap();
        assert!(Arc::ptr_eq(&held[0], &stored));
        // b adopted, a released.
        step(&mut ix, watcher::Event::Apply(pod("b", Some("u1"))));
        step(&mut ix, watcher::Event::Apply(pod("a", None)));
        assert_eq!(names(ix.controlled_by("ns", "u1")), ["b"]);
        assert_eq!(names(ix.orphans_in("ns", all)), ["a"]);
        assert!(ix
            .orphans_in("ns", |p| p.metadata.name.as_deref() == Some("zz"))
            .is_empty());
        step(&mut ix, watcher::Event::Delete(pod("b", Some("u1"))));
        assert!(ix.controlled_by("ns", "u1").is_empty());
        assert!(!ix.by_key.contains_key("u1"), "emptied keys are dropped");
        // A relist replaces everything at its end.
        step(&mut ix, watcher::Event::Init);
        step(&mut ix, watcher::Event::InitApply(pod("c", Some("u2"))));
        assert_eq!(
            names(ix.orphans_in("ns", all)),
            ["a"],
            "the old index serves until done"
        );
        step(&mut ix, watcher::Event::InitDone);
        assert!(ix.orphans_in("ns", all).is_empty());
        assert_eq!(names(ix.controlled_by("ns", "u2")), ["c"]);
    }
}
