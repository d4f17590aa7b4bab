//! The store on disk, an OCI image layout: `blobs/sha256/<hex>`, `index.json` naming manifests
//! (`io.containerd.image.name`), `layers/<diff id hex>/` unpacked, `tmp/` staging, `lock`.
//!
//! Every file appears by an atomic rename from `tmp/` (same filesystem), so a reader or a
//! crash never sees half a blob, half a names table or half a layer.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest;
use super::lock::{LockMode, StoreLock};
use super::manifest::{Descriptor, Index, ANNOTATION_IMAGE_NAME, OCI_INDEX, OCI_MANIFEST};
use super::ImagesError;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImagesError {
    let context = context.into();
    move |source| ImagesError::Io { context, source }
}

/// A name in the store: the normalised reference and the manifest it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameEntry {
    pub name: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// Extra annotations kept with the name (the index digest of a pulled image).
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

/// A directory under `tmp/` removed (with what is left in it) when dropped.
pub(crate) struct Staging {
    path: PathBuf,
}

impl Staging {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "removing a staging dir");
            }
        }
    }
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Layout {
    pub(crate) fn open(root: &Path) -> Result<Layout, ImagesError> {
        let layout = Layout {
            root: root.to_path_buf(),
        };
        for dir in [layout.blobs_dir(), layout.layers_dir(), layout.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let marker = root.join("oci-layout");
        if !marker.exists() {
            layout.write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        layout.remove_stale_staging();
        Ok(layout)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn lock(&self, mode: LockMode) -> Result<StoreLock, ImagesError> {
        StoreLock::acquire(&self.root.join("lock"), mode)
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImagesError> {
        let hex = digest::sha256_hex(digest).map_err(|reason| ImagesError::Archive {
            path: self.root.clone(),
            reason,
        })?;
        Ok(self.blobs_dir().join(hex))
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImagesError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImagesError::NotFound(format!("blob {digest}"))
            } else {
                ImagesError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                }
            }
        })
    }

    /// Moves a staged file (already checked against `digest`) into `blobs/`; a blob already
    /// there has the same content by construction and is kept.
    pub(crate) fn install_blob(&self, staged: &Path, digest: &str) -> Result<(), ImagesError> {
        let dest = self.blob_path(digest)?;
        if dest.exists() {
            return Ok(());
        }
        fs::rename(staged, &dest).map_err(io_err(format!(
            "moving {} to {}",
            staged.display(),
            dest.display()
        )))
    }

    /// A fresh directory under `tmp/`, named after this process so that one left by a crash
    /// is recognised (and removed) by the next `open`.
    pub(crate) fn staging(&self) -> Result<Staging, ImagesError> {
        let pid = std::process::id();
        loop {
            let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
            let path = self.tmp_dir().join(format!("{pid}-{seq}"));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(ImagesError::Io {
                        context: format!("creating {}", path.display()),
                        source: e,
                    })
                }
            }
        }
    }

    fn remove_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            let alive = pid.is_some_and(|p| {
                !matches!(
                    rustix::process::test_kill_process(p),
                    Err(rustix::io::Errno::SRCH)
                )
            });
            if !alive {
                tracing::info!(path = %entry.path().display(), "removing staging left by a crash");
                let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
            }
        }
    }

    /// Writes `path` via a temp file and a rename: readers see the old or the new content.
    pub(crate) fn write_atomically(&self, path: &Path, data: &[u8]) -> Result<(), ImagesError> {
        let staging = self.staging()?;
        let tmp = staging.path().join("file");
        let mut f =
            fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, path).map_err(io_err(format!("replacing {}", path.display())))
    }

    /// The names table; an absent `index.json` is an empty store.
    pub(crate) fn read_names(&self) -> Result<Vec<NameEntry>, ImagesError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| ImagesError::Archive {
            path: path.clone(),
            reason: format!("the store's names table is corrupt: {e}"),
        })?;
        Ok(index
            .manifests
            .into_iter()
            .filter_map(|mut d| {
                let name = d.annotations.remove(ANNOTATION_IMAGE_NAME)?;
                Some(NameEntry {
                    name,
                    manifest_digest: d.digest,
                    manifest_size: d.size,
                    annotations: d.annotations,
                })
            })
            .collect())
    }

    /// Replaces the names table (callers hold the exclusive lock).
    pub(crate) fn write_names(&self, names: &[NameEntry]) -> Result<(), ImagesError> {
        let mut sorted: Vec<&NameEntry> = names.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: sorted
                .into_iter()
                .map(|n| {
                    let mut annotations = n.annotations.clone();
                    annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), n.name.clone());
                    Descriptor {
                        media_type: OCI_MANIFEST.to_string(),
                        digest: n.manifest_digest.clone(),
                        size: n.manifest_size,
                        annotations,
                        platform: None,
                    }
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| ImagesError::Io {
            context: "encoding index.json".into(),
            source: io::Error::other(e),
        })?;
        self.write_atomically(&self.index_path(), &bytes)
    }
}
