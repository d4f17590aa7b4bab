//! A container's root filesystem: its image layers as overlayfs lower dirs under a writable
//! upper dir, mounted in the host's mount namespace; and unmounting whatever lies below a dir.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::layout::RootfsDirs;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the image has no layers")]
    NoLayers,
    #[error("layer path {0} holds a ',' or ':' (overlayfs option separators)")]
    BadLayerPath(PathBuf),
    #[error("overlayfs options are {0} bytes, over the kernel's page-size limit")]
    TooManyLayers(usize),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Mounts the overlay at `dirs.merged`; `layers` bottom first (overlayfs wants the top-most
/// lower first).
pub fn mount_overlay(layers: &[PathBuf], dirs: &RootfsDirs) -> Result<(), RootfsError> {
    if layers.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    for dir in [&dirs.upper, &dirs.work, &dirs.merged] {
        std::fs::create_dir_all(dir).map_err(|source| RootfsError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let mut lower = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        let s = layer.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(RootfsError::BadLayerPath(layer.clone()));
        }
        lower.push(s.into_owned());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dirs.upper.display(),
        dirs.work.display()
    );
    if options.len() >= 4096 {
        return Err(RootfsError::TooManyLayers(options.len()));
    }
    nix::mount::mount(
        Some("overlay"),
        &dirs.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| RootfsError::Io {
        context: format!("mounting overlayfs at {}", dirs.merged.display()),
        source: e.into(),
    })
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = crate::mountinfo::mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Unmounts (lazily: a container mount namespace may still hold a copy) everything at or
/// below `dir`.
pub fn unmount_all_under(dir: &Path) -> std::io::Result<()> {
    for mount_point in mounts_under(dir) {
        match nix::mount::umount2(&mount_point, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::Error::from(e).kind(),
                    format!("unmounting {}: {e}", mount_point.display()),
                ))
            }
        }
    }
    Ok(())
}
