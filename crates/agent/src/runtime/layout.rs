//! Where the runtime keeps things: container state dirs and libcontainer's root under
//! `state_root`, sandbox namespace files, and each container's overlay dirs under `pods_root`.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Layout {
    pub state_root: PathBuf,
    pub pods_root: PathBuf,
}

/// A container's overlayfs dirs (`pods_root/<pod uid>/containers/<id>/`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RootfsDirs {
    pub base: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl Layout {
    /// Our record of each container (`container.json`, the OCI bundle, exit status …).
    pub fn containers_dir(&self) -> PathBuf {
        self.state_root.join("containers")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// libcontainer's state root: it puts a unix socket in `<root>/<lc id>/`, so both stay
    /// short.
    pub fn libcontainer_root(&self) -> PathBuf {
        self.state_root.join("lc")
    }

    pub fn sandbox_dir(&self, pod_uid: &str) -> PathBuf {
        self.state_root.join("sandboxes").join(pod_uid)
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_root.join(pod_uid)
    }

    pub fn rootfs_dirs(&self, pod_uid: &str, id: &str) -> RootfsDirs {
        let base = self.pod_dir(pod_uid).join("containers").join(id);
        RootfsDirs {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("rootfs"),
            base,
        }
    }
}

/// libcontainer's id for a container: 16 hex digits of the stable hash of our id, so the
/// socket paths below the state root stay far under the 108-byte limit whatever the id's
/// length. Recorded in `container.json` at create, never recomputed for an existing one.
pub fn libcontainer_id(id: &str) -> String {
    format!("{:016x}", crate::names::stable_hash(&[id.as_bytes()]))
}

/// A container or pod id safe as one path component.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && !name.contains('/')
        && !name.contains('\0')
}
