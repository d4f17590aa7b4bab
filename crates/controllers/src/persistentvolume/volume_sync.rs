//! One volume's phase (upstream `syncVolume`): Available while unclaimed or only pre-bound,
//! Bound while its claim names it, Released once its claim is gone — then kept (`Retain`),
//! left to the provisioner that made it (`Delete`), or Failed when nobody can delete it.

use std::sync::Arc;

use capstan_events::EventType;
use capstan_slim::Action;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::runtime::reflector::ObjectRef;
use kube::Api;

use super::matching::{self, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY};
use super::{writes, Error, State};

pub async fn reconcile(pv: Arc<PersistentVolume>, st: Arc<State>) -> Result<Action, Error> {
    if pv.metadata.deletion_timestamp.is_none() {
        sync(&pv, &st).await?;
    }
    st.errors
        .reset(&format!("pv/{}", pv.metadata.name.as_deref().unwrap_or("")));
    Ok(Action::await_change())
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn set_phase(pv: &PersistentVolume, to: &str, st: &State) -> Result<(), Error> {
    if phase(pv) != to {
        writes::volume_phase(&st.ctx.client, pv, to, None).await?;
        tracing::info!(
            volume = pv.metadata.name.as_deref().unwrap_or(""),
            phase = to,
            "volume phase"
        );
    }
    Ok(())
}

async fn sync(pv: &PersistentVolume, st: &State) -> Result<(), Error> {
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let Some(r) = claim_ref else {
        return set_phase(pv, "Available", st).await;
    };
    let Some(uid) = r.uid.as_deref().filter(|u| !u.is_empty()) else {
        // Pre-bound by a user to a claim not bound yet: offered to that claim only.
        return set_phase(pv, "Available", st).await;
    };
    let (ns, name) = (
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
    );
    let cached = st
        .claims
        .get(&ObjectRef::<PersistentVolumeClaim>::new(name).within(ns));
    // A claim missing from the cache may just be new: the API decides before a release.
    let claim = match cached {
        Some(c) if c.metadata.uid.as_deref() == Some(uid) => Some(c),
        _ => Api::<PersistentVolumeClaim>::namespaced(st.ctx.client.clone(), ns)
            .get_opt(name)
            .await?
            .map(Arc::new),
    };
    let claim = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid));
    let Some(claim) = claim else {
        return release(pv, st).await;
    };
    let named = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    match named {
        // The claim's sync finishes the binding.
        None => Ok(()),
        Some(v) if Some(v) == pv.metadata.name.as_deref() => set_phase(pv, "Bound", st).await,
        Some(_) => {
            // The claim went to another volume: undo what the controller did, keep what a
            // user pre-bound.
            if matching::volume_annotation(pv, ANN_BOUND_BY_CONTROLLER).is_some() {
                writes::unclaim_volume(&st.ctx.client, pv).await?;
            }
            Ok(())
        }
    }
}

/// The claim is gone: Released, then the reclaim policy.
async fn release(pv: &PersistentVolume, st: &State) -> Result<(), Error> {
    if phase(pv) == "Failed" {
        return Ok(());
    }
    set_phase(pv, "Released", st).await?;
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Delete" if matching::volume_annotation(pv, ANN_PROVISIONED_BY).is_some() => {
            // Its provisioner watches for this and deletes the volume, then the object.
            Ok(())
        }
        "Delete" => {
            let msg = format!(
                "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                pv.metadata.name.as_deref().unwrap_or("")
            );
            st.recorder
                .record(pv, EventType::Warning, "VolumeFailedDelete", &msg)
                .await;
            writes::volume_phase(&st.ctx.client, pv, "Failed", Some(&msg)).await?;
            Ok(())
        }
        "Recycle" => {
            let msg = "Recycle reclaim policy is deprecated and not supported by capstan";
            st.recorder
                .record(pv, EventType::Warning, "VolumeFailedRecycle", msg)
                .await;
            writes::volume_phase(&st.ctx.client, pv, "Failed", Some(msg)).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}
