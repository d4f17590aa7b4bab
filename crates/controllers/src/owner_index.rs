//! The shared pod informer's index by controller (upstream's controller-UID pod indexer):
//! the objects each controller uid controls, and per namespace those no controller owns, so
//! a sync reads its own pods instead of every pod of the cluster.

use std::collections::{HashMap, HashSet};

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

pub struct OwnerIndex<K: Resource<DynamicType = ()>> {
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    /// The index a relist is building, swapped in when it ends (as the store does).
    building: Option<HashMap<String, HashSet<ObjectRef<K>>>>,
}

impl<K: Resource<DynamicType = ()>> Default for OwnerIndex<K> {
    fn default() -> Self {
        OwnerIndex {
            by_key: HashMap::new(),
            building: None,
        }
    }
}

fn insert<K: Resource<DynamicType = ()>>(
    map: &mut HashMap<String, HashSet<ObjectRef<K>>>,
    key: String,
    r: ObjectRef<K>,
) {
    map.entry(key).or_default().insert(r);
}

fn remove<K: Resource<DynamicType = ()>>(
    map: &mut HashMap<String, HashSet<ObjectRef<K>>>,
    key: &str,
    r: &ObjectRef<K>,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(r);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl<K> OwnerIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Follow one watch event; `store` still holds what the object was before it (the
    /// reflector applies the event after this).
    pub fn observe(&mut self, event: &watcher::Event<K>, store: &Store<K>) {
        match event {
            watcher::Event::Apply(obj) => {
                let r = ref_of(obj);
                if let Some(old) = store.get(&r) {
                    remove(&mut self.by_key, &key_of(&*old), &r);
                }
                insert(&mut self.by_key, key_of(obj), r);
            }
            watcher::Event::Delete(obj) => {
                let r = ref_of(obj);
                if let Some(old) = store.get(&r) {
                    remove(&mut self.by_key, &key_of(&*old), &r);
                }
                remove(&mut self.by_key, &key_of(obj), &r);
            }
            watcher::Event::Init => self.building = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                let building = self.building.get_or_insert_with(HashMap::new);
                insert(building, key_of(obj), ref_of(obj));
            }
            watcher::Event::InitDone => {
                if let Some(built) = self.building.take() {
                    self.by_key = built;
                }
            }
        }
    }

    /// The objects controlled by `uid` (in `ns`: a reference from elsewhere is not valid).
    pub fn controlled_by(&self, ns: &str, uid: &str) -> Vec<ObjectRef<K>> {
        self.by_key
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|r| r.namespace.as_deref().unwrap_or("") == ns)
            .cloned()
            .collect()
    }

    /// The objects of `ns` no controller owns.
    pub fn orphans_in(&self, ns: &str) -> Vec<ObjectRef<K>> {
        self.by_key
            .get(&orphan_key(ns))
            .into_iter()
            .flatten()
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

    fn names(refs: Vec<ObjectRef<Pod>>) -> Vec<String> {
        let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn follows_adoption_release_deletion_and_relists() {
        let (store, mut writer) = reflector::store::<Pod>();
        let mut ix = OwnerIndex::default();
        let mut step = |ix: &mut OwnerIndex<Pod>, ev: watcher::Event<Pod>| {
            ix.observe(&ev, &store);
            writer.apply_watcher_event(&ev);
        };
        step(&mut ix, watcher::Event::Init);
        step(&mut ix, watcher::Event::InitApply(pod("a", Some("u1"))));
        step(&mut ix, watcher::Event::InitApply(pod("b", None)));
        step(&mut ix, watcher::Event::InitDone);
        assert_eq!(names(ix.controlled_by("ns", "u1")), ["a"]);
        assert_eq!(names(ix.orphans_in("ns")), ["b"]);
        assert!(ix.controlled_by("other", "u1").is_empty());
        // b adopted, a released.
        step(&mut ix, watcher::Event::Apply(pod("b", Some("u1"))));
        step(&mut ix, watcher::Event::Apply(pod("a", None)));
        assert_eq!(names(ix.controlled_by("ns", "u1")), ["b"]);
        assert_eq!(names(ix.orphans_in("ns")), ["a"]);
        step(&mut ix, watcher::Event::Delete(pod("b", Some("u1"))));
        assert!(ix.controlled_by("ns", "u1").is_empty());
        assert!(!ix.by_key.contains_key("u1"), "emptied keys are dropped");
        // A relist replaces everything at its end.
        step(&mut ix, watcher::Event::Init);
        step(&mut ix, watcher::Event::InitApply(pod("c", Some("u2"))));
        assert_eq!(
            names(ix.orphans_in("ns")),
            ["a"],
            "the old index serves until done"
        );
        step(&mut ix, watcher::Event::InitDone);
        assert!(ix.orphans_in("ns").is_empty());
        assert_eq!(names(ix.controlled_by("ns", "u2")), ["c"]);
    }
}
