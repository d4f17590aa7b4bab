//! Reclaiming: a volume this node provisioned that the binder marked Released under the
//! `Delete` policy loses its directory, then its PersistentVolume object. Only directories
//! under this provisioner's root are removed, whatever the object says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;

use super::{annotation, Provisioner, StorageError, ANN_NODE, ANN_PROVISIONED_BY, PROVISIONER};

pub async fn reconcile(
    pv: Arc<PersistentVolume>,
    p: Arc<Provisioner>,
) -> Result<Action, StorageError> {
    let meta = &pv.metadata;
    let ours = annotation(meta, ANN_PROVISIONED_BY) == Some(PROVISIONER)
        && annotation(meta, ANN_NODE) == Some(p.node.as_str());
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let spec = pv.spec.as_ref();
    let delete = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
    if !ours || !released || !delete || meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = meta.name.as_deref().unwrap_or("");
    if let Some(path) = spec
        .and_then(|s| s.host_path.as_ref())
        .map(|h| PathBuf::from(&h.path))
    {
        remove_dir(&p.root, &path)?;
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<PersistentVolume>::all(p.client.clone())
        .delete(name, &params)
        .await
    {
        Ok(_) => tracing::info!(volume = name, "released local-path volume deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Remove `path` if it is a directory directly under `root` (a volume's own directory).
fn remove_dir(root: &Path, path: &Path) -> Result<(), StorageError> {
    if path.parent() != Some(root) || path.file_name().is_none() {
        return Err(StorageError::Refused(format!(
            "{} is not a local-path volume directory under {}",
            path.display(),
            root.display()
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_volume_directories_under_the_root_are_removed() {
        let root = std::env::temp_dir().join(format!("capstan-reclaim-{}", std::process::id()));
        let vol = root.join("pvc-u_ns_c");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/f"), "x").unwrap();
        assert!(remove_dir(&root, Path::new("/etc")).is_err());
        assert!(remove_dir(&root, &vol.join("sub")).is_err());
        remove_dir(&root, &vol).unwrap();
        assert!(!vol.exists());
        // Gone already (a restart after the removal): fine.
        remove_dir(&root, &vol).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
