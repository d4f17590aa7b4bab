//! Garbage collection: blobs and unpacked layers no name reaches any more are deleted (under
//! the exclusive lock, so no import is half-committed and no unpack is running) — except the
//! layers a mounted container rootfs still uses.

use std::collections::HashSet;
use std::fs;

use super::catalog::load_manifest;
use super::layout::{Layout, NameEntry};

/// Best effort: a failure leaves garbage behind, never deletes what a name still reaches (an
/// unreadable manifest stops the collection).
pub(crate) fn collect(layout: &Layout, names: &[NameEntry]) {
    let mut blobs = HashSet::new();
    let mut diff_ids = HashSet::new();
    for entry in names {
        match load_manifest(layout, &entry.manifest_digest) {
            Ok((manifest, config)) => {
                blobs.insert(hex_of(&entry.manifest_digest));
                blobs.insert(hex_of(&manifest.config.digest));
                blobs.extend(manifest.layers.iter().map(|l| hex_of(&l.digest)));
                diff_ids.extend(config.rootfs.diff_ids.iter().map(|d| hex_of(d)));
            }
            Err(e) => {
                tracing::warn!(name = %entry.name, error = %e, "not collecting garbage: an image is unreadable");
                return;
            }
        }
    }
    let blob_dir = layout.root().join("blobs").join("sha256");
    let mut freed_blobs = 0u32;
    for entry in fs::read_dir(&blob_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !blobs.contains(&name) {
            match fs::remove_file(entry.path()) {
                Ok(()) => freed_blobs += 1,
                Err(e) => tracing::warn!(blob = %name, error = %e, "removing an unused blob"),
            }
        }
    }
    // A container keeps its rootfs mounted until it is removed: its layers stay, even when
    // its image lost its last name (re-tagged, pulled anew, removed), as containerd keeps
    // the snapshots of its containers.
    let layers_dir = layout.layers_dir();
    let in_use: HashSet<String> = crate::mountinfo::overlay_lower_dirs()
        .into_iter()
        .filter_map(|p| {
            let rest = p.strip_prefix(&layers_dir).ok()?;
            Some(
                rest.components()
                    .next()?
                    .as_os_str()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let mut freed_layers = 0u32;
    for entry in fs::read_dir(layout.layers_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if diff_ids.contains(&name) || in_use.contains(&name) {
            continue;
        }
        // Renamed away first so that the layer vanishes at once, not file by file.
        let result = layout.staging().and_then(|trash| {
            let doomed = trash.path().join("layer");
            fs::rename(entry.path(), &doomed).map_err(super::layout::io_err("moving a layer"))?;
            drop(trash);
            Ok(())
        });
        match result {
            Ok(()) => freed_layers += 1,
            Err(e) => tracing::warn!(layer = %name, error = %e, "removing an unused layer"),
        }
    }
    if freed_blobs + freed_layers > 0 {
        tracing::info!(
            blobs = freed_blobs,
            layers = freed_layers,
            "image store garbage collected"
        );
    }
}

fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_string()
}
