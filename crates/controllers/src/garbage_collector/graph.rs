//! The ownership graph (upstream's GraphBuilder): one small node per object of every watched
//! resource — identity, owner references, deletion state — and, per owner uid, its dependents.
//! Changes to it say which objects the workers must look at (pure: no API calls here).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use super::resources::{group_of, Res};

/// Object uids, shared between a node's key and the dependents sets it is in.
pub type Uid = Arc<str>;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

#[derive(Debug)]
pub struct Node {
    pub res: Arc<Res>,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    /// `deletionTimestamp` is set.
    pub being_deleted: bool,
    /// Being deleted with the `foregroundDeletion` finalizer: waits for its blocking dependents.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer: its dependents lose their reference first.
    pub orphaning: bool,
}

impl Node {
    /// The node for an object's metadata (`None` without a uid or name).
    pub fn from_meta(res: Arc<Res>, meta: &ObjectMeta) -> Option<(Uid, Node)> {
        let uid: Uid = Arc::from(meta.uid.as_deref()?);
        let being_deleted = meta.deletion_timestamp.is_some();
        let has = |f: &str| {
            meta.finalizers
                .as_deref()
                .is_some_and(|l| l.iter().any(|x| x == f))
        };
        Some((
            uid,
            Node {
                namespace: meta
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty() && res.namespaced),
                name: meta.name.clone()?,
                owners: meta.owner_references.clone().unwrap_or_default(),
                being_deleted,
                deleting_dependents: being_deleted && has(FOREGROUND),
                orphaning: being_deleted && has(ORPHAN),
                res,
            },
        ))
    }

    /// Whether this node is the object `r` names, seen from a dependent in `dependent_ns`:
    /// same kind, group and name, and for a namespaced owner the dependent's namespace (an
    /// owner elsewhere, or a namespaced owner of a cluster-scoped dependent, is not it).
    fn is_named_by(&self, r: &OwnerReference, dependent_ns: Option<&str>) -> bool {
        self.res.ar.kind == r.kind
            && self.res.ar.group == group_of(&r.api_version)
            && self.name == r.name
            && (!self.res.namespaced || self.namespace.as_deref() == dependent_ns)
    }
}

/// Where a worker reaches an object.
#[derive(Debug, Clone)]
pub struct Ident {
    pub res: Arc<Res>,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Uid,
}

/// What the workers must look at after a change.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub attempt_delete: Vec<Uid>,
    pub attempt_orphan: Vec<Uid>,
}

/// What the graph says of one owner reference.
#[derive(Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Present and not waiting for its dependents.
    Solid,
    /// Present, being deleted in the foreground.
    Waiting,
    /// Not in the graph as the object the reference names: ask the API server.
    Unknown,
}

/// What a worker does with an object.
#[derive(Debug)]
pub enum Work {
    /// Not in the graph, or on its way out already: nothing until it is gone.
    Nothing,
    /// Deleting in the foreground: its blocking dependents (uid, itself deleting dependents).
    DeletingDependents {
        ident: Ident,
        blocking: Vec<(Uid, bool)>,
    },
    /// Check its owners; `all_solid` when the graph already shows each of them present.
    Check { ident: Ident, all_solid: bool },
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    /// Owner uid → uids of the objects referring to it (the owner may be absent).
    dependents: HashMap<Uid, HashSet<Uid>>,
}

impl Graph {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The owner uid as a shared key (the owner node's, when present).
    fn owner_key(&self, uid: &str) -> Uid {
        match self.nodes.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => match self.dependents.get_key_value(uid) {
                Some((k, _)) => k.clone(),
                None => Arc::from(uid),
            },
        }
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// What the graph says of the owner `r` of a dependent in `dependent_ns`.
    pub fn owner_state(&self, dependent_ns: Option<&str>, r: &OwnerReference) -> OwnerState {
        match self.nodes.get(r.uid.as_str()) {
            Some(o) if o.is_named_by(r, dependent_ns) => {
                if o.deleting_dependents {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Unknown,
        }
    }

    /// Whether the object `r` names by uid, kind and name exists, but not where a reference
    /// from the dependent could reach it (another namespace, or namespaced for a
    /// cluster-scoped dependent).
    pub fn is_elsewhere(&self, r: &OwnerReference) -> bool {
        self.nodes
            .get(r.uid.as_str())
            .is_some_and(|o| o.res.ar.kind == r.kind && o.name == r.name)
    }

    /// An object was seen (added or changed).
    pub fn upsert(&mut self, uid: Uid, node: Node, fx: &mut Effects) {
        let old = self.nodes.remove(&uid);
        let old_owners = old.map(|o| o.owners).unwrap_or_default();
        for r in &old_owners {
            let kept = node.owners.iter().find(|n| n.uid == r.uid);
            let was_blocking = r.block_owner_deletion == Some(true);
            let blocks = kept.is_some_and(|n| n.block_owner_deletion == Some(true));
            if kept.is_none() {
                self.unlink(&r.uid, &uid);
            }
            // An owner waiting for its dependents may be free to go now.
            if was_blocking && !blocks {
                if let Some(o) = self.nodes.get(r.uid.as_str()) {
                    if o.deleting_dependents {
                        fx.attempt_delete.push(self.owner_key(&r.uid));
                    }
                }
            }
        }
        let mut check_self = false;
        for r in &node.owners {
            if !old_owners.iter().any(|o| o.uid == r.uid) {
                let key = self.owner_key(&r.uid);
                self.dependents.entry(key).or_default().insert(uid.clone());
            }
            if self.owner_state(node.namespace.as_deref(), r) != OwnerState::Solid {
                check_self = true;
            }
        }
        // An object on its way out is looked at again only if it waits for its dependents.
        if check_self && (!node.being_deleted || node.deleting_dependents) {
            fx.attempt_delete.push(uid.clone());
        }
        if node.deleting_dependents {
            fx.attempt_delete.push(uid.clone());
            if let Some(deps) = self.dependents.get(&uid) {
                fx.attempt_delete.extend(deps.iter().cloned());
            }
        }
        if node.orphaning {
            fx.attempt_orphan.push(uid.clone());
        }
        let was_absent_owner = self.dependents.contains_key(&uid);
        self.nodes.insert(uid.clone(), node);
        if was_absent_owner {
            // Dependents referring to it before it was seen: they may have been judged
            // against a mismatching node; have them look again.
            if let Some(deps) = self.dependents.get(&uid) {
                for d in deps {
                    if let Some(n) = self.nodes.get(d) {
                        let named = n.owners.iter().filter(|r| *r.uid == *uid).any(|r| {
                            self.owner_state(n.namespace.as_deref(), r) == OwnerState::Unknown
                        });
                        if named {
                            fx.attempt_delete.push(d.clone());
                        }
                    }
                }
            }
        }
    }

    /// An object is gone.
    pub fn remove(&mut self, uid: &str, fx: &mut Effects) {
        let Some((key, node)) = self.nodes.remove_entry(uid) else {
            return;
        };
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if let Some(o) = self.nodes.get(r.uid.as_str()) {
                if o.deleting_dependents {
                    fx.attempt_delete.push(self.owner_key(&r.uid));
                }
            }
        }
        // Its dependents lost an owner.
        if let Some(deps) = self.dependents.get(&key) {
            fx.attempt_delete.extend(deps.iter().cloned());
        }
    }

    /// After a relist of the resource `key`: everything of it not seen is gone.
    pub fn retain_resource(&mut self, key: &str, seen: &HashSet<Uid>, fx: &mut Effects) {
        let gone: Vec<Uid> = self
            .nodes
            .iter()
            .filter(|(uid, n)| !seen.contains(*uid) && n.res.key() == key)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.remove(&uid, fx);
        }
    }

    fn ident(&self, uid: &str) -> Option<Ident> {
        let (k, n) = self.nodes.get_key_value(uid)?;
        Some(Ident {
            res: n.res.clone(),
            namespace: n.namespace.clone(),
            name: n.name.clone(),
            uid: k.clone(),
        })
    }

    /// What a worker should do with `uid` now.
    pub fn work(&self, uid: &str) -> Work {
        let (Some(n), Some(ident)) = (self.nodes.get(uid), self.ident(uid)) else {
            return Work::Nothing;
        };
        if n.deleting_dependents {
            let blocking = self
                .dependents
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let dn = self.nodes.get(d)?;
                    dn.owners
                        .iter()
                        .any(|r| *r.uid == *uid && r.block_owner_deletion == Some(true))
                        .then(|| (d.clone(), dn.deleting_dependents))
                })
                .collect();
            return Work::DeletingDependents { ident, blocking };
        }
        if n.being_deleted {
            return Work::Nothing;
        }
        let all_solid = n
            .owners
            .iter()
            .all(|r| self.owner_state(n.namespace.as_deref(), r) == OwnerState::Solid);
        Work::Check { ident, all_solid }
    }

    /// Whether anything refers to `uid` as its owner.
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// Whether something referring to `uid` as its owner is itself waiting for its own
    /// dependents (upstream's cycle check before a Foreground delete of `uid`).
    pub fn has_dependent_deleting_dependents(&self, uid: &str) -> bool {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .any(|d| self.nodes.get(d).is_some_and(|n| n.deleting_dependents))
    }

    /// The objects referring to `uid` (for orphaning).
    pub fn dependents(&self, uid: &str) -> Vec<Ident> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.ident(d))
            .collect()
    }

    /// Whether `uid` is in the graph and being deleted with the `orphan` finalizer.
    pub fn is_orphaning(&self, uid: &str) -> Option<Ident> {
        self.nodes
            .get(uid)
            .filter(|n| n.orphaning)
            .and_then(|_| self.ident(uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::discovery::ApiResource;
    use serde_json::json;

    fn res(kind: &str, plural: &str, namespaced: bool) -> Arc<Res> {
        Arc::new(Res {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
        })
    }

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    fn owner(uid: &str, name: &str, block: bool) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid, "blockOwnerDeletion": block})
    }

    fn add(g: &mut Graph, r: &Arc<Res>, m: serde_json::Value) -> Effects {
        let mut fx = Effects::default();
        let (uid, n) = Node::from_meta(r.clone(), &meta(m)).unwrap();
        g.upsert(uid, n, &mut fx);
        fx
    }

    fn uids(v: &[Uid]) -> Vec<&str> {
        let mut v: Vec<&str> = v.iter().map(|u| &**u).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn an_owner_going_leaves_its_dependents_to_check() {
        let cm = res("ConfigMap", "configmaps", true);
        let mut g = Graph::default();
        assert_eq!(
            add(
                &mut g,
                &cm,
                json!({"name": "o", "namespace": "a", "uid": "o1"})
            ),
            Effects::default()
        );
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "d", "namespace": "a", "uid": "d1", "ownerReferences": [owner("o1", "o", false)]}),
        );
        assert!(fx.attempt_delete.is_empty(), "owner present: nothing to do");
        assert!(matches!(
            g.work("d1"),
            Work::Check {
                all_solid: true,
                ..
            }
        ));
        let mut fx = Effects::default();
        g.remove("o1", &mut fx);
        assert_eq!(uids(&fx.attempt_delete), ["d1"]);
        assert!(matches!(
            g.work("d1"),
            Work::Check {
                all_solid: false,
                ..
            }
        ));
    }

    #[test]
    fn missing_or_elsewhere_owners_are_checked_at_once() {
        let cm = res("ConfigMap", "configmaps", true);
        let ns = res("Namespace", "namespaces", false);
        let mut g = Graph::default();
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "d", "namespace": "a", "uid": "d1", "ownerReferences": [owner("nope", "x", false)]}),
        );
        assert_eq!(uids(&fx.attempt_delete), ["d1"]);
        add(
            &mut g,
            &cm,
            json!({"name": "o", "namespace": "b", "uid": "o1"}),
        );
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "d2", "namespace": "a", "uid": "d2", "ownerReferences": [owner("o1", "o", false)]}),
        );
        assert_eq!(
            uids(&fx.attempt_delete),
            ["d2"],
            "an owner in another namespace is absent"
        );
        // A namespaced owner of a cluster-scoped dependent is absent too.
        let fx = add(
            &mut g,
            &ns,
            json!({"name": "n", "uid": "n1", "ownerReferences": [owner("o1", "o", false)]}),
        );
        assert_eq!(uids(&fx.attempt_delete), ["n1"]);
    }

    #[test]
    fn a_cycle_of_blocking_owners_is_seen_from_either_end() {
        let cm = res("ConfigMap", "configmaps", true);
        let mut g = Graph::default();
        add(
            &mut g,
            &cm,
            json!({"name": "b", "namespace": "n", "uid": "b1", "ownerReferences": [owner("a1", "a", true)]}),
        );
        add(
            &mut g,
            &cm,
            json!({"name": "a", "namespace": "n", "uid": "a1", "ownerReferences": [owner("b1", "b", true)]}),
        );
        assert!(!g.has_dependent_deleting_dependents("b1"));
        // a is deleted in the foreground: it waits for b, b's dependent (a) waits too.
        add(
            &mut g,
            &cm,
            json!({"name": "a", "namespace": "n", "uid": "a1", "deletionTimestamp": "2026-01-01T00:00:00Z",
                   "finalizers": ["foregroundDeletion"], "ownerReferences": [owner("b1", "b", true)]}),
        );
        assert!(g.has_dependent_deleting_dependents("b1"));
        assert!(!g.has_dependent_deleting_dependents("a1"));
        match g.work("a1") {
            Work::DeletingDependents { blocking, .. } => {
                assert_eq!(blocking, vec![(Arc::from("b1"), false)])
            }
            w => panic!("{w:?}"),
        }
        // b's reference unblocked: a waits for nothing.
        add(
            &mut g,
            &cm,
            json!({"name": "b", "namespace": "n", "uid": "b1", "ownerReferences": [owner("a1", "a", false)]}),
        );
        match g.work("a1") {
            Work::DeletingDependents { blocking, .. } => assert!(blocking.is_empty()),
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn foreground_waits_for_blocking_dependents_and_is_rechecked_as_they_go() {
        let cm = res("ConfigMap", "configmaps", true);
        let mut g = Graph::default();
        add(
            &mut g,
            &cm,
            json!({"name": "o", "namespace": "a", "uid": "o1"}),
        );
        add(
            &mut g,
            &cm,
            json!({"name": "b", "namespace": "a", "uid": "b1", "ownerReferences": [owner("o1", "o", true)]}),
        );
        add(
            &mut g,
            &cm,
            json!({"name": "n", "namespace": "a", "uid": "n1", "ownerReferences": [owner("o1", "o", false)]}),
        );
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "o", "namespace": "a", "uid": "o1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}),
        );
        assert_eq!(uids(&fx.attempt_delete), ["b1", "n1", "o1"]);
        match g.work("o1") {
            Work::DeletingDependents { blocking, .. } => assert_eq!(
                uids(&blocking.iter().map(|b| b.0.clone()).collect::<Vec<_>>()),
                ["b1"]
            ),
            w => panic!("{w:?}"),
        }
        let mut fx = Effects::default();
        g.remove("b1", &mut fx);
        assert_eq!(uids(&fx.attempt_delete), ["o1"]);
        match g.work("o1") {
            Work::DeletingDependents { blocking, .. } => assert!(blocking.is_empty()),
            w => panic!("{w:?}"),
        }
        // Dropping blockOwnerDeletion frees the owner too.
        add(
            &mut g,
            &cm,
            json!({"name": "b", "namespace": "a", "uid": "b2", "ownerReferences": [owner("o1", "o", true)]}),
        );
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "b", "namespace": "a", "uid": "b2", "ownerReferences": [owner("o1", "o", false)]}),
        );
        assert!(fx.attempt_delete.iter().any(|u| &**u == "o1"));
    }

    #[test]
    fn orphaning_and_relists() {
        let cm = res("ConfigMap", "configmaps", true);
        let mut g = Graph::default();
        add(
            &mut g,
            &cm,
            json!({"name": "d", "namespace": "a", "uid": "d1", "ownerReferences": [owner("o1", "o", true)]}),
        );
        let fx = add(
            &mut g,
            &cm,
            json!({"name": "o", "namespace": "a", "uid": "o1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["orphan"]}),
        );
        assert_eq!(uids(&fx.attempt_orphan), ["o1"]);
        assert_eq!(g.is_orphaning("o1").map(|i| i.name), Some("o".into()));
        assert_eq!(g.dependents("o1").len(), 1);
        let mut fx = Effects::default();
        g.retain_resource("v1/configmaps", &HashSet::from([Arc::from("d1")]), &mut fx);
        assert_eq!(g.len(), 1);
        assert_eq!(uids(&fx.attempt_delete), ["d1"]);
    }
}
