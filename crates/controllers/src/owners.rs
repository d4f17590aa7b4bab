//! Controller references (upstream's ControllerRefManager): which objects a controller owns,
//! adopting orphans its selector matches and releasing owned ones it no longer matches.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// The owners of kind `K` a changed object concerns (upstream's add/update handlers): its
/// controller if that is a `K`; for an orphan not being deleted, every `K` of its namespace
/// `picks` accepts (each may adopt it); none otherwise.
pub fn concerned<K>(
    meta: &ObjectMeta,
    owners: &Store<K>,
    picks: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = meta.namespace.as_deref().unwrap_or("");
    match controller_of(meta) {
        Some(r) if r.kind == K::kind(&()) && r.api_version == K::api_version(&()) => {
            vec![ObjectRef::new(&r.name).within(ns)]
        }
        Some(_) => vec![],
        None if meta.deletion_timestamp.is_some() => vec![],
        None => owners
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns) && picks(o))
            .map(|o| ObjectRef::from_obj(&**o))
            .collect(),
    }
}

/// A controller reference to `owner` (controller and blockOwnerDeletion true, as upstream's
/// `metav1.NewControllerRef`).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Make `owner` the controller of `obj` (a strategic merge keyed by uid, with the object's
/// uid as a precondition, as upstream's adoption patch), adding `finalizer` if given (the
/// Job controller's tracking finalizer, as its ControllerRefManager does).
async fn adopt<K>(
    api: &Api<K>,
    obj: &K,
    owner: &OwnerReference,
    finalizer: Option<&str>,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut patch = json!({"metadata": {
        "ownerReferences": [owner],
        "uid": obj.meta().uid,
    }});
    if let Some(f) = finalizer {
        patch["metadata"]["finalizers"] = json!([f]);
    }
    api.patch(
        obj.meta().name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await
}

/// Remove `owner_uid`'s reference from `obj` (upstream's release patch).
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": obj.meta().uid,
    }});
    api.patch(
        obj.meta().name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await
}

/// Upstream's ClaimObjects: of `candidates` (objects in the owner's namespace), those the
/// owner controls after adopting orphans `matches` accepts and releasing owned ones it
/// does not. An owner being deleted adopts nothing and releases nothing. Errors adopting or
/// releasing one object leave it out (it is retried on the next pass). Cached objects are
/// shared, not copied: only adopted ones are new.
pub async fn claim<K>(
    api: &Api<K>,
    owner: &OwnerReference,
    owner_deleting: bool,
    candidates: Vec<Arc<K>>,
    matches: impl Fn(&K) -> bool,
) -> Vec<Arc<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    claim_with(api, owner, owner_deleting, candidates, matches, None).await
}

/// As `claim`, adding `finalizer` to the objects it adopts.
pub async fn claim_with<K>(
    api: &Api<K>,
    owner: &OwnerReference,
    owner_deleting: bool,
    candidates: Vec<Arc<K>>,
    matches: impl Fn(&K) -> bool,
    finalizer: Option<&str>,
) -> Vec<Arc<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut claimed = Vec::new();
    for obj in candidates {
        let meta = obj.meta();
        match controller_of(meta) {
            Some(r) if r.uid != owner.uid => {}
            Some(_) => {
                if matches(&obj) {
                    claimed.push(obj);
                } else if !owner_deleting {
                    if let Err(e) = release(api, &*obj, &owner.uid).await {
                        tracing::debug!(error = %e, "release failed");
                    }
                }
            }
            None => {
                if owner_deleting || meta.deletion_timestamp.is_some() || !matches(&obj) {
                    continue;
                }
                match adopt(api, &*obj, owner, finalizer).await {
                    Ok(adopted) => claimed.push(Arc::new(adopted)),
                    Err(e) => tracing::debug!(error = %e, "adoption failed"),
                }
            }
        }
    }
    claimed
}
