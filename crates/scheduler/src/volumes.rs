//! The volume checks that need no storage driver (VolumeBinding's PreFilter): every
//! PersistentVolumeClaim a pod names must exist, not be terminating, and be bound unless its
//! StorageClass binds on first consumer.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::{Api, Client};

pub fn claims(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect()
}

/// Err is upstream's pre-filter message; API errors other than 404 count as "not yet".
pub async fn check(client: &Client, pod: &Pod) -> Result<(), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut unbound_immediate = false;
    for name in claims(pod) {
        let pvc = match api.get_opt(&name).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
            Err(e) => return Err(format!("error getting PVC \"{ns}/{name}\": {e}")),
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let bound = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty());
        if bound {
            continue;
        }
        let class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let wait = if class.is_empty() {
            false
        } else {
            match Api::<StorageClass>::all(client.clone())
                .get_opt(&class)
                .await
            {
                Ok(Some(sc)) => sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"),
                Ok(None) => {
                    return Err(format!("storageclass.storage.k8s.io \"{class}\" not found"))
                }
                Err(e) => return Err(format!("error getting StorageClass \"{class}\": {e}")),
            }
        };
        if !wait {
            unbound_immediate = true;
        }
    }
    if unbound_immediate {
        return Err("pod has unbound immediate PersistentVolumeClaims".into());
    }
    Ok(())
}
