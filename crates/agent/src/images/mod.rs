//! The node's image store: content-addressed blobs in an OCI layout under the agent's data dir,
//! names → manifests, layers unpacked once and shared by every container (overlayfs lowers).
//! Imports `docker save` and OCI archives, pulls from registries; safe for two processes
//! (`capstan images import` while the agent runs).

use std::path::{Path, PathBuf};
use std::time::Instant;

mod archive;
mod catalog;
mod compression;
mod digest;
mod gc;
mod layout;
mod lock;
mod manifest;
mod pull;
mod reference;
mod unpack;

pub use reference::Reference;

use catalog::StoredImage;
use layout::Layout;
use lock::LockMode;

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
    /// The names that came from a registry rather than an imported archive.
    pub pulled_names: Vec<String>,
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
    Reference::parse(reference).map(|r| r.to_string())
}

/// How a reference matched an image.
pub(crate) enum Match {
    /// One of its names (normalised).
    Name(String),
    /// `repo@sha256:…` naming one of its manifests: the repository.
    RepoDigest(String),
    /// Its id (`sha256:<hex>`, or a unique prefix of at least 12 hex digits).
    Id,
}

/// The image a reference (a name, a repo digest or an image id) designates among `images`.
pub(crate) fn find<'a>(
    images: &'a [StoredImage],
    reference: &str,
) -> Result<Option<(&'a StoredImage, Match)>, ImagesError> {
    if reference.starts_with("sha256:") {
        digest::sha256_hex(reference).map_err(|reason| ImagesError::InvalidReference {
            reference: reference.to_string(),
            reason,
        })?;
        return Ok(images
            .iter()
            .find(|s| s.image.id == reference)
            .map(|s| (s, Match::Id)));
    }
    let parsed = Reference::parse(reference);
    if let Ok(r) = &parsed {
        let name = r.to_string();
        if let Some(s) = images.iter().find(|s| s.image.names.contains(&name)) {
            return Ok(Some((s, Match::Name(name))));
        }
        if r.digest.is_some() {
            if let Some(s) = images.iter().find(|s| s.image.repo_digests.contains(&name)) {
                return Ok(Some((s, Match::RepoDigest(r.repository()))));
            }
        }
    }
    let is_id_prefix = reference.len() >= 12
        && reference.len() <= 64
        && reference
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_id_prefix {
        let mut hits = images
            .iter()
            .filter(|s| s.image.id["sha256:".len()..].starts_with(reference));
        if let (Some(s), None) = (hits.next(), hits.next()) {
            return Ok(Some((s, Match::Id)));
        }
        return Ok(None);
    }
    parsed.map(|_| None)
}

/// The store (cheap to share behind an `Arc`).
pub struct ImageStore {
    root: PathBuf,
    layout: Layout,
    /// One unpack at a time in this process: two pods of one image wait for one unpack
    /// instead of both doing it (other processes are handled by the rename in `unpack`).
    unpacking: tokio::sync::Mutex<()>,
}

fn blocking_failed(e: tokio::task::JoinError) -> ImagesError {
    ImagesError::Io {
        context: "image store task".into(),
        source: std::io::Error::other(e),
    }
}

/// Image archives `import_dir` picks up, by name (as k3s's air-gap images folder).
fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    [".tar", ".tar.gz", ".tgz", ".tar.zst"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

impl ImageStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImagesError> {
        Ok(ImageStore {
            root: root.to_path_buf(),
            layout: Layout::open(root)?,
            unpacking: tokio::sync::Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a `docker save` or OCI archive (tar, optionally gzip or zstd); returns the
    /// names added.
    pub async fn import_file(&self, path: &Path) -> Result<Vec<String>, ImagesError> {
        let layout = self.layout.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let staged = archive::StagedArchive::stage(&layout, &path)?;
            let images = staged.images()?;
            let names = catalog::commit(&layout, &images)?;
            tracing::info!(archive = %path.display(), names = ?names,
                elapsed_ms = started.elapsed().as_millis() as u64, "images imported");
            Ok(names)
        })
        .await
        .map_err(blocking_failed)?
    }

    /// Imports every archive in `dir` (a missing dir is nothing to import). An archive that
    /// fails is logged and skipped: the others, and the node, still come up.
    pub async fn import_dir(&self, dir: &Path) -> Result<(), ImagesError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ImagesError::Io {
                    context: format!("reading {}", dir.display()),
                    source: e,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_archive(p))
            .collect();
        files.sort();
        for file in files {
            if let Err(e) = self.import_file(&file).await {
                tracing::warn!(archive = %file.display(), error = %e, "image archive not imported");
            }
        }
        Ok(())
    }

    /// Every image in the store (read from disk: another process may have imported).
    pub fn list(&self) -> Result<Vec<Image>, ImagesError> {
        let _lock = self.layout.lock(LockMode::Shared)?;
        Ok(catalog::load_images(&self.layout)?
            .into_iter()
            .map(|s| s.image)
            .collect())
    }

    /// The image a (not yet normalised) reference names, if present. Also takes a repo digest
    /// (`busybox@sha256:…`) or an image id (`sha256:…`, or 12+ leading hex digits).
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImagesError> {
        let _lock = self.layout.lock(LockMode::Shared)?;
        let images = catalog::load_images(&self.layout)?;
        Ok(find(&images, reference)?.map(|(s, _)| s.image.clone()))
    }

    /// The image's layers unpacked (once, shared), bottom first: overlayfs lower dirs.
    pub async fn layers(&self, image: &Image) -> Result<Vec<PathBuf>, ImagesError> {
        let _one_at_a_time = self.unpacking.lock().await;
        let layout = self.layout.clone();
        let id = image.id.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = layout.lock(LockMode::Shared)?;
            let images = catalog::load_images(&layout)?;
            let stored = images
                .iter()
                .find(|s| s.image.id == id)
                .ok_or_else(|| ImagesError::NotFound(id.clone()))?;
            if stored.manifest.layers.len() != stored.diff_ids.len() {
                return Err(ImagesError::Archive {
                    path: layout.root().to_path_buf(),
                    reason: format!(
                        "image {id}: {} layers but {} diff ids",
                        stored.manifest.layers.len(),
                        stored.diff_ids.len()
                    ),
                });
            }
            let started = Instant::now();
            let mut dirs = Vec::with_capacity(stored.diff_ids.len());
            let mut unpacked = 0;
            for (layer, diff_id) in stored.manifest.layers.iter().zip(&stored.diff_ids) {
                let blob = layout.blob_path(&layer.digest)?;
                let u = unpack::unpack_layer(&layout, &blob, diff_id)?;
                unpacked += usize::from(u.unpacked);
                dirs.push(u.dir);
            }
            if unpacked > 0 {
                tracing::info!(image = %id, layers = dirs.len(), unpacked,
                    elapsed_ms = started.elapsed().as_millis() as u64, "image layers ready");
            }
            Ok(dirs)
        })
        .await
        .map_err(blocking_failed)?
    }

    /// Removes a name; the image's blobs and layers go with its last name. Also takes a repo
    /// digest or an image id (every name of the image goes).
    pub fn remove(&self, reference: &str) -> Result<(), ImagesError> {
        catalog::remove(&self.layout, reference)
    }

    /// Pulls from the registry the reference names (HTTPS, or HTTP for loopback/insecure).
    pub async fn pull(&self, reference: &str, auth: &RegistryAuth) -> Result<Image, ImagesError> {
        let parsed = Reference::parse(reference)?;
        let name = parsed.to_string();
        let (incoming, staging) = pull::fetch(&self.layout, &parsed, auth).await?;
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || {
            catalog::commit(&layout, std::slice::from_ref(&incoming))?;
            drop(staging);
            let _lock = layout.lock(LockMode::Shared)?;
            let images = catalog::load_images(&layout)?;
            find(&images, &name)?
                .map(|(s, _)| s.image.clone())
                .ok_or(ImagesError::NotFound(name))
        })
        .await
        .map_err(blocking_failed)?
    }
}
