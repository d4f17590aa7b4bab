//! A pod's `persistentVolumeClaim` volume on the node: claim → its bound PersistentVolume →
//! the volume's directory (`hostPath` or `local`), bind-mounted into the containers. A claim
//! not bound yet is an error the worker reports as `FailedMount` and retries, as the kubelet.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};

/// The host directory of the volume bound to `claim` in `namespace`; Err is the reason.
pub async fn resolve(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(claim)
        .await
        .map_err(|e| format!("error reading PVC {namespace}/{claim}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    if phase != "Bound" || volume.is_empty() {
        return Err(format!(
            "PVC {namespace}/{claim} has non-bound phase (\"{phase}\") or empty pvc.Spec.VolumeName (\"{volume}\")"
        ));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(volume)
        .await
        .map_err(|e| format!("error reading PV {volume}: {e}"))?
        .ok_or_else(|| format!("persistentvolume \"{volume}\" not found"))?;
    path_of(&pv, &pvc)
}

fn path_of(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<PathBuf, String> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| format!("persistentvolume \"{name}\" has no spec"))?;
    let back = spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref());
    if back.is_none() || back != pvc.metadata.uid.as_deref() {
        return Err(format!(
            "persistentvolume \"{name}\" is not bound to this claim (its claimRef points elsewhere)"
        ));
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err("volumeMode Block is not supported by capstan's agent".into());
    }
    if let Some(host) = &spec.host_path {
        let path = PathBuf::from(&host.path);
        // As upstream's hostPath: DirectoryOrCreate makes the directory (0755); otherwise it
        // must be there.
        if host.type_.as_deref() == Some("DirectoryOrCreate") && !path.exists() {
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
        }
        if !path.exists() {
            return Err(format!(
                "hostPath {} of volume \"{name}\" does not exist",
                path.display()
            ));
        }
        return Ok(path);
    }
    if let Some(local) = &spec.local {
        let path = PathBuf::from(&local.path);
        if !path.is_dir() {
            return Err(format!(
                "local volume path {} of volume \"{name}\" is not a directory",
                path.display()
            ));
        }
        return Ok(path);
    }
    Err(format!(
        "persistentvolume \"{name}\": only hostPath and local volumes can be mounted by capstan's agent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_volume_bound_back_to_the_claim_mounts() {
        let dir = std::env::temp_dir().join(format!("capstan-claim-vol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pvc: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "c", "uid": "u1"}})).unwrap();
        let pv = |uid: &str, source: serde_json::Value| -> PersistentVolume {
            let mut spec = json!({"claimRef": {"name": "c", "uid": uid}});
            spec.as_object_mut()
                .unwrap()
                .extend(source.as_object().unwrap().clone());
            serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": spec})).unwrap()
        };
        let host = json!({"hostPath": {"path": dir.to_str().unwrap()}});
        assert_eq!(path_of(&pv("u1", host.clone()), &pvc).unwrap(), dir);
        assert!(path_of(&pv("u2", host), &pvc).is_err());
        let local = json!({"local": {"path": dir.to_str().unwrap()}});
        assert_eq!(path_of(&pv("u1", local), &pvc).unwrap(), dir);
        let nfs = json!({"nfs": {"server": "x", "path": "/"}});
        assert!(path_of(&pv("u1", nfs), &pvc)
            .unwrap_err()
            .contains("only hostPath"));
        let created = dir.join("made");
        let doc =
            json!({"hostPath": {"path": created.to_str().unwrap(), "type": "DirectoryOrCreate"}});
        assert_eq!(path_of(&pv("u1", doc), &pvc).unwrap(), created);
        assert!(created.is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
