//! One claim toward Bound (upstream `syncClaim`): an unbound claim gets the best matching
//! volume, or waits for its first consumer, or is handed to its class's provisioner; a claim
//! naming a volume is bound to it, or Lost when the volume went away after binding.

use std::sync::Arc;

use capstan_events::EventType;
use capstan_slim::Action;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::runtime::reflector::ObjectRef;
use kube::Api;

use super::matching::{self, ANN_BIND_COMPLETED, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER};
use super::{writes, Error, State};

pub async fn reconcile(claim: Arc<PersistentVolumeClaim>, st: Arc<State>) -> Result<Action, Error> {
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    match volume {
        None => sync_unbound(&claim, &st).await?,
        Some(v) => sync_bound(&claim, &v, &st).await?,
    }
    st.errors
        .reset(&format!("pvc/{}", crate::pods::key(&claim.metadata)));
    Ok(Action::await_change())
}

fn phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn sync_unbound(claim: &PersistentVolumeClaim, st: &State) -> Result<(), Error> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if matching::claim_is_block(claim) {
        st.recorder
            .record(
                claim,
                EventType::Warning,
                "FailedBinding",
                "volumeMode Block is not supported by capstan; only Filesystem volumes are",
            )
            .await;
        return ensure_pending(claim, st).await;
    }
    let class_name = matching::claim_class(claim);
    let class = st.class(class_name);
    let selected = matching::claim_annotation(claim, ANN_SELECTED_NODE);
    let waits_for_consumer = class
        .as_ref()
        .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let delay = waits_for_consumer && selected.is_none();
    let node: Option<Arc<Node>> =
        selected.and_then(|n| st.ctx.nodes().store.get(&ObjectRef::new(n)));
    let volumes = st.volumes.state();
    let found = matching::find_best(
        claim,
        volumes.iter().map(Arc::as_ref),
        delay,
        node.as_deref(),
    );
    if let Some(pv) = found {
        return bind(claim, pv, st).await;
    }
    if delay {
        st.recorder
            .record(
                claim,
                EventType::Normal,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            )
            .await;
        return ensure_pending(claim, st).await;
    }
    match class {
        Some(sc) if sc.provisioner != matching::NO_PROVISIONER => {
            if matching::claim_annotation(claim, ANN_STORAGE_PROVISIONER)
                != Some(sc.provisioner.as_str())
            {
                writes::ask_provisioner(&st.ctx.client, claim, &sc.provisioner).await?;
            }
            let msg = format!(
                "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                sc.provisioner
            );
            st.recorder
                .record(claim, EventType::Normal, "ExternalProvisioning", &msg)
                .await;
        }
        Some(_) => {
            st.recorder
                .record(
                    claim,
                    EventType::Normal,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class provisioner is set",
                )
                .await;
        }
        None if class_name.is_empty() => {
            st.recorder
                .record(
                    claim,
                    EventType::Normal,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                )
                .await;
        }
        None => {
            let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
            st.recorder
                .record(claim, EventType::Warning, "ProvisioningFailed", &msg)
                .await;
        }
    }
    ensure_pending(claim, st).await
}

async fn sync_bound(claim: &PersistentVolumeClaim, volume: &str, st: &State) -> Result<(), Error> {
    let completed = matching::claim_annotation(claim, ANN_BIND_COMPLETED).is_some();
    // The cache may not have a volume created a moment ago: ask the API before calling the
    // claim Lost.
    let pv = match st.volumes.get(&ObjectRef::new(volume)) {
        Some(pv) => Some(pv),
        None => Api::<PersistentVolume>::all(st.ctx.client.clone())
            .get_opt(volume)
            .await?
            .map(Arc::new),
    };
    let Some(pv) = pv else {
        if completed {
            return lost(
                claim,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                st,
            )
            .await;
        }
        return ensure_pending(claim, st).await;
    };
    let claimed = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some();
    if !claimed || matching::is_bound_to(&pv, claim) {
        return bind(claim, &pv, st).await;
    }
    if completed {
        return lost(
            claim,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
            st,
        )
        .await;
    }
    let msg = format!("volume \"{volume}\" already bound to a different claim.");
    st.recorder
        .record(claim, EventType::Warning, "FailedBinding", &msg)
        .await;
    ensure_pending(claim, st).await
}

/// Finish binding `claim` to `pv`; each step is skipped when already done, so a retry after
/// a conflict picks up where the last attempt stopped.
async fn bind(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    st: &State,
) -> Result<(), Error> {
    let client = &st.ctx.client;
    let name = pv.metadata.name.clone().unwrap_or_default();
    let uid_set = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| Some(u) == claim.metadata.uid.as_deref());
    let pv = if uid_set {
        pv.clone()
    } else {
        writes::claim_volume(client, pv, claim).await?
    };
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        writes::volume_phase(client, &pv, "Bound", None).await?;
    }
    let named = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str());
    let claim = if named && matching::claim_annotation(claim, ANN_BIND_COMPLETED).is_some() {
        claim.clone()
    } else {
        writes::bind_claim(client, claim, &name).await?
    };
    let reported = claim.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Bound")
            && s.capacity == pv.spec.as_ref().and_then(|p| p.capacity.clone())
    });
    if !reported {
        writes::claim_phase(client, &claim, "Bound", Some(&pv)).await?;
        tracing::info!(claim = %crate::pods::key(&claim.metadata), volume = %name, "claim bound");
    }
    Ok(())
}

async fn lost(
    claim: &PersistentVolumeClaim,
    reason: &str,
    msg: &str,
    st: &State,
) -> Result<(), Error> {
    if phase(claim) != "Lost" {
        st.recorder
            .record(claim, EventType::Warning, reason, msg)
            .await;
        writes::claim_phase(&st.ctx.client, claim, "Lost", None).await?;
    }
    Ok(())
}

async fn ensure_pending(claim: &PersistentVolumeClaim, st: &State) -> Result<(), Error> {
    if phase(claim) != "Pending" {
        writes::claim_phase(&st.ctx.client, claim, "Pending", None).await?;
    }
    Ok(())
}
