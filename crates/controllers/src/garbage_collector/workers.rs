//! The GC's work (upstream's attemptToDeleteItem and attemptToOrphan): classify an object's
//! owners — verifying absence with a live GET — then delete it, drop dead references, or
//! finish an owner's Foreground or Orphan deletion by removing its finalizer.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::Api;
use serde_json::{json, Value};

use super::graph::{Ident, OwnerState, Uid, Work, FOREGROUND, ORPHAN};
use super::{Error, Gc};
use crate::events::EventType;

/// Dependents patched at once while orphaning.
const ORPHAN_CONCURRENCY: usize = 16;

/// An owner reference, once classified.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Solid,
    /// Being deleted in the foreground: it waits for this dependent.
    Waiting,
    /// Absent (or not the object the reference names).
    Dangling,
}

pub async fn attempt_to_delete(gc: &Gc, uid: &Uid) -> Result<(), Error> {
    let work = gc.graph().work(uid);
    match work {
        Work::Nothing
        | Work::Check {
            all_solid: true, ..
        } => Ok(()),
        Work::DeletingDependents { ident, blocking } => {
            if blocking.is_empty() {
                tracing::debug!(namespace = ?ident.namespace, name = %ident.name, kind = %ident.res.ar.kind, "no blocking dependents left: removing foregroundDeletion");
                return remove_finalizer(gc, &ident, FOREGROUND).await;
            }
            for (dep, itself_deleting_dependents) in blocking {
                if !itself_deleting_dependents {
                    gc.delete_q.add(dep);
                }
            }
            Ok(())
        }
        Work::Check { ident, .. } => check_owners(gc, &ident).await,
    }
}

/// The live object `ident` names (`None`, and forgotten by the graph, if it is gone).
async fn latest(
    gc: &Gc,
    api: &Api<PartialObjectMeta<DynamicObject>>,
    ident: &Ident,
) -> Result<Option<PartialObjectMeta<DynamicObject>>, Error> {
    match api.get_opt(&ident.name).await? {
        Some(o) if o.metadata.uid.as_deref() == Some(&*ident.uid) => Ok(Some(o)),
        _ => {
            gc.forget(&ident.uid);
            Ok(None)
        }
    }
}

fn has_finalizer(meta: &kube::api::ObjectMeta, f: &str) -> bool {
    meta.finalizers
        .as_deref()
        .is_some_and(|l| l.iter().any(|x| x == f))
}

async fn check_owners(gc: &Gc, ident: &Ident) -> Result<(), Error> {
    let api = ident.res.api(&gc.client, ident.namespace.as_deref());
    let Some(obj) = latest(gc, &api, ident).await? else {
        return Ok(());
    };
    let meta = obj.metadata;
    // On its way out: its own deletion (and any foreground wait) is followed from the graph.
    if meta.deletion_timestamp.is_some() {
        return Ok(());
    }
    let owners = meta.owner_references.clone().unwrap_or_default();
    if owners.is_empty() {
        return Ok(());
    }
    if owners.iter().any(|r| gc.was_orphaned(&r.uid)) {
        // Its owner was deleted with the orphan policy before this object reached the graph
        // (created just before, its watch event behind the owner's): it is orphaned now, as
        // it would have been then, and what remains of its owners is checked again.
        let remaining: Vec<&OwnerReference> =
            owners.iter().filter(|r| !gc.was_orphaned(&r.uid)).collect();
        tracing::info!(namespace = ?ident.namespace, name = %ident.name, kind = %ident.res.ar.kind, "orphaning a dependent seen after its owner went");
        let rv = meta.resource_version.clone().unwrap_or_default();
        patch_meta(
            &api,
            ident,
            json!({"ownerReferences": remaining, "resourceVersion": rv}),
        )
        .await?;
        if !remaining.is_empty() {
            gc.delete_q.add(ident.uid.clone());
        }
        return Ok(());
    }
    let (mut solid, mut gone) = (0, Vec::new());
    let mut waiting = false;
    for r in &owners {
        match classify(gc, ident, r).await? {
            Class::Solid => solid += 1,
            Class::Waiting => {
                waiting = true;
                gone.push(r.uid.clone());
            }
            Class::Dangling => gone.push(r.uid.clone()),
        }
    }
    let rv = meta.resource_version.clone().unwrap_or_default();
    if solid > 0 {
        if gone.is_empty() {
            return Ok(());
        }
        // Still owned: it only loses the references to dead owners (and to owners waiting
        // for it, which would otherwise wait forever).
        let remaining: Vec<&OwnerReference> =
            owners.iter().filter(|r| !gone.contains(&r.uid)).collect();
        tracing::info!(namespace = ?ident.namespace, name = %ident.name, kind = %ident.res.ar.kind, removed = ?gone, "removing references to absent owners");
        return patch_meta(
            &api,
            ident,
            json!({"ownerReferences": remaining, "resourceVersion": rv}),
        )
        .await;
    }
    let mut rv = rv;
    let policy = if waiting && gc.graph().has_dependents(&ident.uid) {
        // An owner waits in the foreground and this object has dependents of its own: it
        // goes in the foreground too, so the owner waits for the whole subtree.
        if gc.graph().has_dependent_deleting_dependents(&ident.uid) {
            // A dependent waits for its dependents too: perhaps a cycle (this object owns
            // what owns it), where each would wait for the other forever. As upstream, its
            // references stop blocking their owners first (a check with false positives:
            // they then only stop waiting for this object).
            rv = unblock_owners(&api, ident, &owners, rv).await?;
        }
        PropagationPolicy::Foreground
    } else if has_finalizer(&meta, ORPHAN) {
        PropagationPolicy::Orphan
    } else if has_finalizer(&meta, FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    tracing::info!(namespace = ?ident.namespace, name = %ident.name, kind = %ident.res.ar.kind, ?policy, "deleting: every owner is gone");
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(ident.uid.to_string()),
            resource_version: Some(rv),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&ident.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Set `blockOwnerDeletion: false` on every blocking reference of `ident` (upstream's
/// unblockOwnerReferences), pinned to `rv`; the resourceVersion after the patch.
async fn unblock_owners(
    api: &Api<PartialObjectMeta<DynamicObject>>,
    ident: &Ident,
    owners: &[OwnerReference],
    rv: String,
) -> Result<String, Error> {
    if !owners.iter().any(|r| r.block_owner_deletion == Some(true)) {
        return Ok(rv);
    }
    let unblocked: Vec<OwnerReference> = owners
        .iter()
        .cloned()
        .map(|mut r| {
            if r.block_owner_deletion == Some(true) {
                r.block_owner_deletion = Some(false);
            }
            r
        })
        .collect();
    tracing::info!(namespace = ?ident.namespace, name = %ident.name, kind = %ident.res.ar.kind, "an owner and a dependent both wait for their dependents: its references no longer block, to break a possible cycle");
    let patch = json!({"metadata": {"ownerReferences": unblocked, "resourceVersion": rv}});
    let patched = api
        .patch(&ident.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(patched.metadata.resource_version.unwrap_or_default())
}

/// Upstream's classifyReferences for one reference, the graph first; absence is verified
/// with a live GET (in the dependent's namespace for a namespaced owner).
async fn classify(gc: &Gc, ident: &Ident, r: &OwnerReference) -> Result<Class, Error> {
    let in_graph = gc.graph().owner_state(ident.namespace.as_deref(), r);
    match in_graph {
        OwnerState::Solid => return Ok(Class::Solid),
        OwnerState::Waiting => return Ok(Class::Waiting),
        OwnerState::Unknown => {}
    }
    let absent_key = format!("{}/{}", ident.namespace.as_deref().unwrap_or(""), r.uid);
    if gc.is_absent(&absent_key) {
        return Ok(Class::Dangling);
    }
    let Some(res) = gc.resources().for_ref(&r.api_version, &r.kind) else {
        return Err(Error::UnknownOwnerKind {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
        });
    };
    if res.namespaced && ident.namespace.is_none() {
        // A cluster-scoped object cannot be owned by a namespaced one.
        invalid_namespace_event(gc, ident, r).await;
        gc.note_absent(absent_key);
        return Ok(Class::Dangling);
    }
    let api = res.api(&gc.client, ident.namespace.as_deref());
    match api.get_opt(&r.name).await? {
        Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            if o.metadata.deletion_timestamp.is_some() && has_finalizer(&o.metadata, FOREGROUND) {
                Ok(Class::Waiting)
            } else {
                Ok(Class::Solid)
            }
        }
        _ => {
            if gc.graph().is_elsewhere(r) {
                invalid_namespace_event(gc, ident, r).await;
            }
            gc.note_absent(absent_key);
            Ok(Class::Dangling)
        }
    }
}

/// Upstream's `OwnerRefInvalidNamespace` warning on the dependent.
async fn invalid_namespace_event(gc: &Gc, ident: &Ident, r: &OwnerReference) {
    let ns = ident.namespace.as_deref().unwrap_or("");
    let message = format!(
        "ownerRef [{}/{}, namespace: {ns}, name: {}, uid: {}] does not exist in namespace {ns:?}",
        r.api_version, r.kind, r.name, r.uid
    );
    let involved = ObjectReference {
        api_version: Some(ident.res.ar.api_version.clone()),
        kind: Some(ident.res.ar.kind.clone()),
        name: Some(ident.name.clone()),
        namespace: ident.namespace.clone(),
        uid: Some(ident.uid.to_string()),
        ..ObjectReference::default()
    };
    gc.recorder
        .record_ref(
            involved,
            EventType::Warning,
            "OwnerRefInvalidNamespace",
            &message,
        )
        .await;
}

/// A JSON merge patch of `ident`'s metadata (pinned to a resourceVersion by the caller, so a
/// concurrent change is a conflict, retried, not overwritten). Gone is done.
async fn patch_meta(
    api: &Api<PartialObjectMeta<DynamicObject>>,
    ident: &Ident,
    mut meta: Value,
) -> Result<(), Error> {
    // An emptied list is removed, as upstream's patch leaves no `[]` behind.
    if let Some(m) = meta.as_object_mut() {
        for v in m.values_mut() {
            if v.as_array().is_some_and(Vec::is_empty) {
                *v = Value::Null;
            }
        }
    }
    let patch = json!({ "metadata": meta });
    match api
        .patch(&ident.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove finalizer `f` from the live object `ident` names (upstream's removeFinalizer).
async fn remove_finalizer(gc: &Gc, ident: &Ident, f: &str) -> Result<(), Error> {
    let api = ident.res.api(&gc.client, ident.namespace.as_deref());
    let Some(obj) = latest(gc, &api, ident).await? else {
        return Ok(());
    };
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|x| x == f) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|x| *x != f).collect();
    let rv = obj.metadata.resource_version.clone().unwrap_or_default();
    patch_meta(
        &api,
        ident,
        json!({"finalizers": rest, "resourceVersion": rv}),
    )
    .await
}

/// An owner being deleted with the `orphan` finalizer: remove its reference from every
/// dependent, then the finalizer, so it goes and they stay.
pub async fn attempt_to_orphan(gc: &Gc, uid: &Uid) -> Result<(), Error> {
    let owner = gc.graph().is_orphaning(uid);
    let Some(owner) = owner else {
        return Ok(());
    };
    let dependents = gc.graph().dependents(uid);
    let results: Vec<Result<(), Error>> = futures::stream::iter(dependents)
        .map(|d| orphan_one(gc, d, uid.clone()))
        .buffer_unordered(ORPHAN_CONCURRENCY)
        .collect()
        .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e);
    }
    tracing::info!(namespace = ?owner.namespace, name = %owner.name, kind = %owner.res.ar.kind, "dependents orphaned: removing the orphan finalizer");
    gc.note_orphaned(uid);
    remove_finalizer(gc, &owner, ORPHAN).await
}

async fn orphan_one(gc: &Gc, dep: Ident, owner: Uid) -> Result<(), Error> {
    let api = dep.res.api(&gc.client, dep.namespace.as_deref());
    let Some(obj) = latest(gc, &api, &dep).await? else {
        return Ok(());
    };
    let owners = obj.metadata.owner_references.clone().unwrap_or_default();
    if !owners.iter().any(|r| *r.uid == *owner) {
        return Ok(());
    }
    let remaining: Vec<&OwnerReference> = owners.iter().filter(|r| *r.uid != *owner).collect();
    let rv = obj.metadata.resource_version.clone().unwrap_or_default();
    patch_meta(
        &api,
        &dep,
        json!({"ownerReferences": remaining, "resourceVersion": rv}),
    )
    .await
}

/// Run one queue's worker: take an item, do it, retry failures with back-off.
pub async fn work(gc: Arc<Gc>, orphan: bool) {
    let q = if orphan {
        gc.orphan_q.clone()
    } else {
        gc.delete_q.clone()
    };
    loop {
        let uid = q.get().await;
        let result = if orphan {
            attempt_to_orphan(&gc, &uid).await
        } else {
            attempt_to_delete(&gc, &uid).await
        };
        q.done(&uid);
        let key = format!("{}/{uid}", if orphan { "orphan" } else { "delete" });
        match result {
            Ok(()) => gc.backoff.reset(&key),
            Err(e) => {
                let (attempts, delay) = gc.backoff.failed(&key);
                let conflict = matches!(&e, Error::Kube(kube::Error::Api(s)) if s.is_conflict());
                if conflict {
                    tracing::debug!(uid = %uid, attempts, retry_in = ?delay, error = %e, "garbage collector: conflict; retrying");
                } else {
                    tracing::warn!(uid = %uid, attempts, retry_in = ?delay, error = %e, "garbage collector: failed; retrying");
                }
                q.add_after(uid, delay);
            }
        }
    }
}
