//! The node's image store: content-addressed blobs in an OCI layout under the agent's data dir,
//! names → manifests, layers unpacked once and shared by every container (overlayfs lowers).
//! Imports `docker save` and OCI archives, pulls from registries; safe for two processes
//! (`capstan images import` while the agent runs).

use std::path::{Path, PathBuf};

/// What a container needs from its image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` as in the image config.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `user:group`, `uid` or `uid:gid` as in the image config ("" = root).
    pub user: String,
}

/// An image present in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<config digest>` — the image id (`status.images[].names` includes it).
    pub id: String,
    /// Normalised references naming it (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `docker.io/library/busybox@sha256:<manifest digest>` where known.
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    /// Compressed size of its layers (bytes), as `status.images[].sizeBytes`.
    pub size: u64,
}

/// Credentials for a registry, from `imagePullSecrets` (`.dockerconfigjson`).
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} is not present")]
    NotFound(String),
    #[error("{path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("pulling {reference}: {reason}")]
    Pull { reference: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Normalises a reference as containerd does: `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/x` → `localhost:5000/x:latest`; a digest reference keeps its digest.
pub fn normalize(reference: &str) -> Result<String, ImagesError> {
    let _ = reference;
    unimplemented!("images helper")
}

/// The store (cheap to share behind an `Arc`).
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImagesError> {
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a `docker save` or OCI archive (tar, optionally gzip); returns the names added.
    pub async fn import_file(&self, path: &Path) -> Result<Vec<String>, ImagesError> {
        let _ = path;
        unimplemented!("images helper")
    }

    /// Imports every archive in `dir` (a missing dir is nothing to import).
    pub async fn import_dir(&self, dir: &Path) -> Result<(), ImagesError> {
        let _ = dir;
        unimplemented!("images helper")
    }

    /// Every image in the store (read from disk: another process may have imported).
    pub fn list(&self) -> Result<Vec<Image>, ImagesError> {
        unimplemented!("images helper")
    }

    /// The image a (not yet normalised) reference names, if present.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImagesError> {
        let _ = reference;
        unimplemented!("images helper")
    }

    /// The image's layers unpacked (once, shared), bottom first: overlayfs lower dirs.
    pub async fn layers(&self, image: &Image) -> Result<Vec<PathBuf>, ImagesError> {
        let _ = image;
        unimplemented!("images helper")
    }

    /// Removes a name; the image's blobs and layers go with its last name.
    pub fn remove(&self, reference: &str) -> Result<(), ImagesError> {
        let _ = reference;
        unimplemented!("images helper")
    }

    /// Pulls from the registry the reference names (HTTPS, or HTTP for loopback/insecure).
    pub async fn pull(&self, reference: &str, auth: &RegistryAuth) -> Result<Image, ImagesError> {
        let _ = (reference, auth);
        unimplemented!("images helper")
    }
}
