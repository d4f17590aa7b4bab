//! The pvc-protection and pv-protection controllers (upstream `pkg/controller/volume/
//! {pvcprotection,pvprotection}`): every claim and volume carries a finalizer, removed only
//! once deletion is asked and no pod uses the claim (or no claim is bound to the volume), so
//! data in use is never pulled from under a running pod.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;

pub const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
pub const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct Loop {
    ctx: Arc<Context>,
    errors: Backoff,
}

/// The claims a pod's volumes name, as references in its namespace.
fn claims_of(pod: &Pod) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| ObjectRef::new(&c.claim_name).within(&ns))
        .collect()
}

/// upstream `podUsesPVC` over pods that may still run: a finished pod holds nothing.
fn uses(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !finished
        && pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .any(|c| c.claim_name == claim)
}

pub async fn run_pvc(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        errors: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
    });
    // A pod going away may be what a terminating claim waits for.
    let pods = ctx.pods().subscribe();
    capstan_slim::controller(
        Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .watches_shared_stream(pods, |pod: Arc<Pod>| claims_of(&pod))
    .run(reconcile_pvc, error_policy, lp)
    .await;
}

pub async fn run_pv(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        errors: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
    });
    capstan_slim::controller(
        Api::<PersistentVolume>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_pv, error_policy, lp)
    .await;
}

async fn reconcile_pvc(claim: Arc<PersistentVolumeClaim>, lp: Arc<Loop>) -> Result<Action, Error> {
    let ns = claim.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(lp.ctx.client.clone(), &ns);
    let name = claim.name_any();
    if claim.metadata.deletion_timestamp.is_none() {
        add_finalizer(&api, claim.as_ref(), PVC_FINALIZER).await?;
    } else if has(claim.as_ref(), PVC_FINALIZER) {
        let cached = lp.ctx.pods().store.state();
        let in_use = cached
            .iter()
            .any(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && uses(p, &name));
        // The cache may lag a pod created a moment ago: the API has the last word.
        let in_use = in_use
            || Api::<Pod>::namespaced(lp.ctx.client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|p| uses(p, &name));
        if !in_use {
            remove_finalizer(&api, claim.as_ref(), PVC_FINALIZER).await?;
            tracing::info!(claim = %format!("{ns}/{name}"), "claim no longer in use: protection removed");
        }
    }
    lp.errors.reset(&format!("pvc/{ns}/{name}"));
    Ok(Action::await_change())
}

async fn reconcile_pv(pv: Arc<PersistentVolume>, lp: Arc<Loop>) -> Result<Action, Error> {
    let api: Api<PersistentVolume> = Api::all(lp.ctx.client.clone());
    if pv.metadata.deletion_timestamp.is_none() {
        add_finalizer(&api, pv.as_ref(), PV_FINALIZER).await?;
    } else if has(pv.as_ref(), PV_FINALIZER) {
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            remove_finalizer(&api, pv.as_ref(), PV_FINALIZER).await?;
        }
    }
    lp.errors.reset(&format!("pv/{}", pv.name_any()));
    Ok(Action::await_change())
}

fn has<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

/// The finalizer list rewritten at the version it was read (a concurrent change wins, and the
/// loop tries again on the new version).
async fn set_finalizers<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({"metadata": {"resourceVersion": obj.meta().resource_version,
                                   "finalizers": finalizers}});
    match api
        .patch(
            obj.meta().name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or changed since read: the watch brings the new version, which is synced
        // again.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if has(obj, finalizer) {
        return Ok(());
    }
    let mut all = obj.meta().finalizers.clone().unwrap_or_default();
    all.push(finalizer.to_string());
    set_finalizers(api, obj, all).await
}

async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let all: Vec<String> = obj
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, obj, all).await
}

fn error_policy<K: Resource>(obj: Arc<K>, err: &Error, lp: Arc<Loop>) -> Action {
    let key = format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    );
    let (attempts, delay) = lp.errors.failed(&key);
    tracing::warn!(object = %key, error = %err, attempts, "volume protection: sync failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pods_that_may_still_run_hold_a_claim() {
        let pod = |phase: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]},
                "status": {"phase": phase}}))
            .unwrap()
        };
        assert!(uses(&pod("Running"), "c"));
        assert!(uses(&pod("Pending"), "c"));
        assert!(!uses(&pod("Running"), "other"));
        assert!(!uses(&pod("Succeeded"), "c"));
        assert!(!uses(&pod("Failed"), "c"));
        assert_eq!(
            claims_of(&pod("Running")),
            [ObjectRef::new("c").within("ns")]
        );
    }
}
