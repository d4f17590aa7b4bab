//! What the binder writes: a volume's claimRef and phase, a claim's volumeName, annotations
//! and status. Each write is a merge patch carrying the resourceVersion it was decided on, so
//! two claims racing for one volume cannot both win (the loser gets a 409 and retries).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::matching::{ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER};

fn pvs(client: &Client) -> Api<PersistentVolume> {
    Api::all(client.clone())
}

fn pvcs(client: &Client, ns: &str) -> Api<PersistentVolumeClaim> {
    Api::namespaced(client.clone(), ns)
}

/// Point the volume at the claim (marked bound by the controller).
pub async fn claim_volume(
    client: &Client,
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<PersistentVolume, kube::Error> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let body = json!({
        "metadata": {"resourceVersion": pv.metadata.resource_version,
                     "annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
        "spec": {"claimRef": {
            "kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": claim.metadata.namespace, "name": claim.metadata.name,
            "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
        }},
    });
    pvs(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
}

/// Drop the claimRef of a volume the controller bound to a claim now bound elsewhere.
pub async fn unclaim_volume(client: &Client, pv: &PersistentVolume) -> Result<(), kube::Error> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let body = json!({
        "metadata": {"resourceVersion": pv.metadata.resource_version,
                     "annotations": {ANN_BOUND_BY_CONTROLLER: null}},
        "spec": {"claimRef": null},
    });
    pvs(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}

pub async fn volume_phase(
    client: &Client,
    pv: &PersistentVolume,
    phase: &str,
    message: Option<&str>,
) -> Result<(), kube::Error> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let body = json!({"status": {"phase": phase, "message": message}});
    pvs(client)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}

/// Name the volume in the claim, with upstream's annotations.
pub async fn bind_claim(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volume: &str,
) -> Result<PersistentVolumeClaim, kube::Error> {
    let (ns, name) = key(claim);
    let set_by_us = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    let mut annotations = json!({ANN_BIND_COMPLETED: "yes"});
    if set_by_us {
        annotations[ANN_BOUND_BY_CONTROLLER] = json!("yes");
    }
    let body = json!({
        "metadata": {"resourceVersion": claim.metadata.resource_version, "annotations": annotations},
        "spec": {"volumeName": volume},
    });
    pvcs(client, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
}

/// The claim's phase; Bound also reports the volume's capacity and access modes.
pub async fn claim_phase(
    client: &Client,
    claim: &PersistentVolumeClaim,
    phase: &str,
    volume: Option<&PersistentVolume>,
) -> Result<(), kube::Error> {
    let (ns, name) = key(claim);
    let mut status = json!({"phase": phase});
    match volume.and_then(|v| v.spec.as_ref()) {
        Some(spec) => {
            status["capacity"] = json!(spec.capacity);
            status["accessModes"] = json!(spec.access_modes);
        }
        None => {
            status["capacity"] = Value::Null;
            status["accessModes"] = Value::Null;
        }
    }
    pvcs(client, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .map(|_| ())
}

/// Tell provisioners it is their turn (both the GA and the beta annotation, as upstream).
pub async fn ask_provisioner(
    client: &Client,
    claim: &PersistentVolumeClaim,
    provisioner: &str,
) -> Result<(), kube::Error> {
    let (ns, name) = key(claim);
    let body = json!({"metadata": {"annotations": {
        super::matching::ANN_STORAGE_PROVISIONER: provisioner,
        super::matching::ANN_BETA_STORAGE_PROVISIONER: provisioner,
    }}});
    pvcs(client, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}

fn key(claim: &PersistentVolumeClaim) -> (&str, &str) {
    (
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or(""),
    )
}
