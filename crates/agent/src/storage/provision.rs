//! Provisioning: a claim handed to this provisioner (the binder's `storage-provisioner`
//! annotation) and scheduled to this node gets `<root>/pvc-<uid>_<ns>_<name>` (0777, as
//! k3s) and a PersistentVolume pre-bound to it, pinned to this node by `nodeAffinity`.

use std::path::Path;
use std::sync::Arc;

use capstan_events::EventType;
use capstan_slim::Action;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use super::{
    annotation, Provisioner, StorageError, ANN_NODE, ANN_PROVISIONED_BY, ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER, PROVISIONER,
};

pub async fn reconcile(
    claim: Arc<PersistentVolumeClaim>,
    p: Arc<Provisioner>,
) -> Result<Action, StorageError> {
    let meta = &claim.metadata;
    let ours = annotation(meta, ANN_STORAGE_PROVISIONER) == Some(PROVISIONER)
        && annotation(meta, ANN_SELECTED_NODE) == Some(p.node.as_str());
    let bound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if !ours || bound || meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    provision(&claim, &p).await?;
    Ok(Action::await_change())
}

/// The volume's name: `pvc-<claim uid>`, as every external provisioner names it.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or(""))
}

async fn provision(claim: &PersistentVolumeClaim, p: &Provisioner) -> Result<(), StorageError> {
    let ns = claim.metadata.namespace.as_deref().unwrap_or("");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    let uid = claim.metadata.uid.as_deref().unwrap_or("");
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() == Some("Block") {
        let msg = "local-path volumes are directories: volumeMode Block is not supported";
        p.recorder
            .record(claim, EventType::Warning, "ProvisioningFailed", msg)
            .await;
        return Ok(());
    }
    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    let Some(class) = Api::<StorageClass>::all(p.client.clone())
        .get_opt(&class_name)
        .await?
    else {
        return Err(StorageError::Refused(format!(
            "storageclass.storage.k8s.io \"{class_name}\" not found"
        )));
    };
    if class.provisioner != PROVISIONER {
        return Ok(());
    }
    let pv_name = volume_name(claim);
    let api: Api<PersistentVolume> = Api::all(p.client.clone());
    if api.get_opt(&pv_name).await?.is_some() {
        return Ok(());
    }
    let dir = p.root.join(format!("pvc-{uid}_{ns}_{name}"));
    make_dir(&dir)?;
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .ok_or_else(|| StorageError::Refused("the claim requests no storage".into()))?;
    let pv: PersistentVolume = capstan_slim::from_json(&json!({
        "metadata": {"name": pv_name, "annotations": {
            ANN_PROVISIONED_BY: PROVISIONER, ANN_NODE: p.node}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
            "storageClassName": class_name,
            "mountOptions": class.mount_options,
            "volumeMode": "Filesystem",
            "hostPath": {"path": dir.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [p.node]}]}]}},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": ns, "name": name, "uid": uid,
                         "resourceVersion": claim.metadata.resource_version},
        }
    }))
    .map_err(|e| StorageError::Refused(format!("building the volume: {e}")))?;
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(claim = %format!("{ns}/{name}"), volume = %pv_name, path = %dir.display(), "local-path volume provisioned");
    p.recorder
        .record(
            claim,
            EventType::Normal,
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {pv_name}"),
        )
        .await;
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // 0777 as k3s: any container user may write (the umask would narrow create_dir's mode).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io)
}
