//! The store's images as the names table and the blobs describe them: reading them into
//! `Image`s, committing imported or pulled images, dropping names.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::gc;
use super::layout::{Layout, NameEntry};
use super::lock::LockMode;
use super::manifest::{
    self, AnyManifest, ConfigFile, Manifest, ANNOTATION_INDEX_DIGEST, ANNOTATION_PULLED,
};
use super::reference::Reference;
use super::{Image, ImagesError};

/// An image read from the store with what `layers` needs.
#[derive(Debug, Clone)]
pub(crate) struct StoredImage {
    pub image: Image,
    pub manifest: Manifest,
    pub diff_ids: Vec<String>,
}

/// An image fetched or unpacked from an archive into a staging dir, every blob already
/// checked against its digest, waiting to be committed under the exclusive lock.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Normalised references.
    pub names: Vec<String>,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub index_digest: Option<String>,
    /// Fetched from a registry (`imagePullPolicy: Always` asks it again), not imported.
    pub pulled: bool,
    /// `(digest, staged file)`: the manifest, the config and the layers.
    pub blobs: Vec<(String, PathBuf)>,
}

fn corrupt(layout: &Layout, what: String) -> ImagesError {
    ImagesError::Archive {
        path: layout.root().to_path_buf(),
        reason: what,
    }
}

/// The manifest and config of a names-table entry.
pub(crate) fn load_manifest(
    layout: &Layout,
    digest: &str,
) -> Result<(Manifest, ConfigFile), ImagesError> {
    let bytes = layout.read_blob(digest)?;
    let manifest = match manifest::parse_any(&bytes) {
        Ok(AnyManifest::Image(m)) => m,
        Ok(AnyManifest::Index(_)) => {
            return Err(corrupt(
                layout,
                format!("{digest} is an index, not a manifest"),
            ))
        }
        Err(e) => return Err(corrupt(layout, format!("manifest {digest}: {e}"))),
    };
    let config_bytes = layout.read_blob(&manifest.config.digest)?;
    let config: ConfigFile = serde_json::from_slice(&config_bytes).map_err(|e| {
        corrupt(
            layout,
            format!("image config {}: {e}", manifest.config.digest),
        )
    })?;
    Ok((manifest, config))
}

/// Every image (caller holds a lock). Names whose blobs cannot be read are logged and left
/// out: one damaged image must not hide the others.
pub(crate) fn load_images(layout: &Layout) -> Result<Vec<StoredImage>, ImagesError> {
    let names = layout.read_names()?;
    let mut by_id: BTreeMap<String, StoredImage> = BTreeMap::new();
    let mut loaded: HashMap<String, Option<(Manifest, ConfigFile)>> = HashMap::new();
    for entry in names {
        let parsed = loaded
            .entry(entry.manifest_digest.clone())
            .or_insert_with(|| match load_manifest(layout, &entry.manifest_digest) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(name = %entry.name, error = %e, "image left out of the list");
                    None
                }
            });
        let Some((manifest, config)) = parsed else {
            continue;
        };
        let id = manifest.config.digest.clone();
        let stored = by_id.entry(id.clone()).or_insert_with(|| StoredImage {
            image: Image {
                id,
                names: Vec::new(),
                repo_digests: Vec::new(),
                pulled_names: Vec::new(),
                config: config.image_config(),
                size: manifest.layers.iter().map(|l| l.size).sum(),
            },
            manifest: manifest.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
        });
        if let Ok(r) = Reference::parse(&entry.name) {
            let digest = entry
                .annotations
                .get(ANNOTATION_INDEX_DIGEST)
                .unwrap_or(&entry.manifest_digest);
            let repo_digest = format!("{}@{digest}", r.repository());
            if !stored.image.repo_digests.contains(&repo_digest) {
                stored.image.repo_digests.push(repo_digest);
            }
        }
        if entry.annotations.contains_key(ANNOTATION_PULLED) {
            stored.image.pulled_names.push(entry.name.clone());
        }
        stored.image.names.push(entry.name);
    }
    Ok(by_id
        .into_values()
        .map(|mut s| {
            s.image.names.sort();
            s.image.repo_digests.sort();
            s
        })
        .collect())
}

/// Moves the images' blobs into the store and points their names at them, in one exclusive
/// section; a name that pointed elsewhere moves (as `docker load` retags), and whatever no
/// name reaches any more is collected.
pub(crate) fn commit(layout: &Layout, incoming: &[Incoming]) -> Result<Vec<String>, ImagesError> {
    let _lock = layout.lock(LockMode::Exclusive)?;
    for image in incoming {
        for (digest, staged) in &image.blobs {
            layout.install_blob(staged, digest)?;
        }
    }
    let mut names = layout.read_names()?;
    let mut added = Vec::new();
    for image in incoming {
        let mut annotations = BTreeMap::new();
        if let Some(d) = &image.index_digest {
            annotations.insert(ANNOTATION_INDEX_DIGEST.to_string(), d.clone());
        }
        if image.pulled {
            annotations.insert(ANNOTATION_PULLED.to_string(), "true".to_string());
        }
        for name in &image.names {
            names.retain(|n| &n.name != name);
            names.push(NameEntry {
                name: name.clone(),
                manifest_digest: image.manifest_digest.clone(),
                manifest_size: image.manifest_size,
                annotations: annotations.clone(),
            });
            added.push(name.clone());
        }
    }
    layout.write_names(&names)?;
    gc::collect(layout, &names);
    Ok(added)
}

/// Drops the names a reference matches: a name, a repo digest (`repo@sha256:…`, every name
/// of that repository on that image) or an image id (`sha256:…`, every name of the image).
pub(crate) fn remove(layout: &Layout, reference: &str) -> Result<(), ImagesError> {
    let _lock = layout.lock(LockMode::Exclusive)?;
    let images = load_images(layout)?;
    let doomed: Vec<String> = match super::find(&images, reference)? {
        Some((stored, how)) => match how {
            super::Match::Name(name) => vec![name],
            super::Match::RepoDigest(repo) => stored
                .image
                .names
                .iter()
                .filter(|n| Reference::parse(n).is_ok_and(|r| r.repository() == repo))
                .cloned()
                .collect(),
            super::Match::Id => stored.image.names.clone(),
        },
        None => return Err(ImagesError::NotFound(reference.to_string())),
    };
    let mut names = layout.read_names()?;
    names.retain(|n| !doomed.contains(&n.name));
    layout.write_names(&names)?;
    tracing::info!(reference, removed = ?doomed, "image names removed");
    gc::collect(layout, &names);
    Ok(())
}
