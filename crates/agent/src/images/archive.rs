//! Import of image archives: `docker save` (`manifest.json` + `RepoTags`, legacy `layer.tar`
//! dirs or the newer blobs layout) and OCI image layouts (`index.json` naming its manifests),
//! plain tar, gzip or zstd. One pass stages every file; nothing enters the store before commit.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::catalog::Incoming;
use super::digest;
use super::layout::{io_err, Layout, Staging};
use super::manifest::{
    self, AnyManifest, ConfigFile, Descriptor, DockerSaveEntry, Index, Manifest,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_CONFIG, OCI_MANIFEST,
};
use super::reference::Reference;
use super::ImagesError;

/// A file of the archive, copied into the staging dir.
#[derive(Debug, Clone)]
struct StagedFile {
    path: PathBuf,
    digest: String,
    size: u64,
}

/// The archive's files by their cleaned path, links to what they point at.
pub(crate) struct StagedArchive {
    archive: PathBuf,
    staging: Staging,
    files: HashMap<String, StagedFile>,
    links: HashMap<String, String>,
}

fn bad(archive: &Path, reason: impl Into<String>) -> ImagesError {
    ImagesError::Archive {
        path: archive.to_path_buf(),
        reason: reason.into(),
    }
}

/// `./a//b/` → `a/b`; `..` is refused (nothing is ever written at these paths, but an archive
/// that tries is not one to trust).
fn clean(archive: &Path, raw: &str) -> Result<String, ImagesError> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(archive, format!("entry {raw:?} escapes the archive"))),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl StagedArchive {
    /// Copies every regular file of the archive into a staging dir, hashing it on the way.
    pub(crate) fn stage(layout: &Layout, archive: &Path) -> Result<StagedArchive, ImagesError> {
        let staging = layout.staging()?;
        let mut tar = tar::Archive::new(super::compression::decompressed(archive)?);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let not_tar = |e: std::io::Error| bad(archive, format!("not a readable tar archive: {e}"));
        for (n, entry) in tar.entries().map_err(not_tar)?.enumerate() {
            let mut entry = entry.map_err(not_tar)?;
            let raw = entry
                .path()
                .map_err(not_tar)?
                .to_string_lossy()
                .into_owned();
            let key = clean(archive, &raw)?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = staging.path().join(format!("f{n}"));
                    let mut out = File::create(&path)
                        .map_err(io_err(format!("creating {}", path.display())))?;
                    let (digest, size) = digest::copy_hashing(&mut entry, &mut out)
                        .and_then(|r| out.flush().map(|()| r))
                        .map_err(|e| bad(archive, format!("reading {raw:?}: {e}")))?;
                    files.insert(key, StagedFile { path, digest, size });
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(not_tar)?
                        .map(|t| t.to_string_lossy().into_owned())
                        .ok_or_else(|| bad(archive, format!("link {raw:?} has no target")))?;
                    let resolved = if entry.header().entry_type() == tar::EntryType::Symlink
                        && !target.starts_with('/')
                    {
                        let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                        clean(archive, &format!("{dir}/{target}"))?
                    } else {
                        clean(archive, &target)?
                    };
                    links.insert(key, resolved);
                }
                _ => {}
            }
        }
        Ok(StagedArchive {
            archive: archive.to_path_buf(),
            staging,
            files,
            links,
        })
    }

    fn get(&self, name: &str) -> Result<&StagedFile, ImagesError> {
        let mut key = clean(&self.archive, name)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&key) {
                return Ok(f);
            }
            match self.links.get(&key) {
                Some(next) => key = next.clone(),
                None => break,
            }
        }
        Err(bad(
            &self.archive,
            format!("{name:?} is missing from the archive"),
        ))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImagesError> {
        let f = self.get(name)?;
        let bytes = fs::read(&f.path).map_err(io_err(format!("reading {}", f.path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(&self.archive, format!("{name}: {e}")))
    }

    /// The blob an OCI descriptor names, checked against its digest.
    fn blob(&self, desc: &Descriptor) -> Result<&StagedFile, ImagesError> {
        let hex = digest::sha256_hex(&desc.digest).map_err(|e| bad(&self.archive, e))?;
        let f = self.get(&format!("blobs/sha256/{hex}"))?;
        if f.digest != desc.digest {
            return Err(bad(
                &self.archive,
                format!(
                    "blob {} is corrupt: its content hashes to {}",
                    desc.digest, f.digest
                ),
            ));
        }
        Ok(f)
    }

    /// The images of the archive, staged and named, ready to commit.
    pub(crate) fn images(&self) -> Result<Vec<Incoming>, ImagesError> {
        let images = if self.files.contains_key("manifest.json") {
            self.docker_save_images()?
        } else if self.files.contains_key("index.json") {
            self.oci_images()?
        } else {
            return Err(bad(
                &self.archive,
                "neither manifest.json (docker save) nor index.json (OCI layout): not an image archive",
            ));
        };
        if images.iter().all(|i| i.names.is_empty()) {
            return Err(bad(&self.archive, "no image in the archive has a name"));
        }
        Ok(images)
    }

    fn docker_save_images(&self) -> Result<Vec<Incoming>, ImagesError> {
        let entries: Vec<DockerSaveEntry> = self.read_json("manifest.json")?;
        let mut out = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let config = self.get(&entry.config)?;
            let config_doc: ConfigFile = self.read_json(&entry.config)?;
            if config_doc.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(bad(
                    &self.archive,
                    format!(
                        "{}: {} layers but {} diff ids in its config",
                        entry.config,
                        entry.layers.len(),
                        config_doc.rootfs.diff_ids.len()
                    ),
                ));
            }
            let mut blobs = vec![(config.digest.clone(), config.path.clone())];
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let f = self.get(layer)?;
                layers.push(Descriptor {
                    media_type: sniff_media_type(&f.path)?.to_string(),
                    digest: f.digest.clone(),
                    size: f.size,
                    annotations: Default::default(),
                    platform: None,
                });
                blobs.push((f.digest.clone(), f.path.clone()));
            }
            // docker save has no manifest: synthesise one, deterministically, so that
            // importing the same archive twice gives the same manifest digest.
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: OCI_CONFIG.to_string(),
                    digest: config.digest.clone(),
                    size: config.size,
                    annotations: Default::default(),
                    platform: None,
                },
                layers,
            };
            let bytes = serde_json::to_vec(&manifest)
                .map_err(|e| bad(&self.archive, format!("encoding a manifest: {e}")))?;
            let (manifest_digest, manifest_path) = self.stage_bytes(&format!("m{i}"), &bytes)?;
            blobs.push((manifest_digest.clone(), manifest_path));
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t).map(|r| r.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Incoming {
                names,
                manifest_digest,
                manifest_size: bytes.len() as u64,
                index_digest: None,
                pulled: false,
                blobs,
            });
        }
        Ok(out)
    }

    fn oci_images(&self) -> Result<Vec<Incoming>, ImagesError> {
        let index: Index = self.read_json("index.json")?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let names = match oci_name(desc) {
                Some(n) => vec![Reference::parse(&n)?.to_string()],
                None => {
                    tracing::warn!(archive = %self.archive.display(), digest = %desc.digest,
                        "OCI archive entry without a full image name skipped");
                    continue;
                }
            };
            let (manifest_desc, manifest) = self.resolve_manifest(desc, 0)?;
            let mut blobs = Vec::new();
            let m = self.blob(&manifest_desc)?;
            blobs.push((m.digest.clone(), m.path.clone()));
            for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
                let f = self.blob(d)?;
                blobs.push((f.digest.clone(), f.path.clone()));
            }
            out.push(Incoming {
                names,
                manifest_digest: m.digest.clone(),
                manifest_size: m.size,
                index_digest: None,
                pulled: false,
                blobs,
            });
        }
        Ok(out)
    }

    /// Follows nested indexes (a multi-platform image) to this host's manifest.
    fn resolve_manifest(
        &self,
        desc: &Descriptor,
        depth: u32,
    ) -> Result<(Descriptor, Manifest), ImagesError> {
        if depth > 4 {
            return Err(bad(&self.archive, "image indexes nested too deep"));
        }
        let f = self.blob(desc)?;
        let bytes = fs::read(&f.path).map_err(io_err(format!("reading {}", f.path.display())))?;
        match manifest::parse_any(&bytes).map_err(|e| bad(&self.archive, e))? {
            AnyManifest::Image(m) => Ok((desc.clone(), m)),
            AnyManifest::Index(i) => {
                let pick = manifest::pick_platform(&i).ok_or_else(|| {
                    bad(
                        &self.archive,
                        format!(
                            "index {} has no linux/{} image",
                            desc.digest,
                            manifest::host_architecture()
                        ),
                    )
                })?;
                self.resolve_manifest(pick, depth + 1)
            }
        }
    }

    fn stage_bytes(&self, name: &str, bytes: &[u8]) -> Result<(String, PathBuf), ImagesError> {
        let path = self.staging.path().join(name);
        fs::write(&path, bytes).map_err(io_err(format!("writing {}", path.display())))?;
        Ok((digest::of_bytes(bytes), path))
    }
}

/// The full name an OCI index entry carries: containerd's annotation, else the OCI one when it
/// is a full reference (by convention it may hold only a tag, which names nothing alone).
fn oci_name(desc: &Descriptor) -> Option<String> {
    if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
        return Some(n.clone());
    }
    desc.annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| n.contains(':') || n.contains('/') || n.contains('@'))
        .cloned()
}

fn sniff_media_type(path: &Path) -> Result<&'static str, ImagesError> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }
    Ok(manifest::layer_media_type(&head[..n]))
}
