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

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
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

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
