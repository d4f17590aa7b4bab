//! The kubelet's atomic writer for projected files (configMap, secret, downwardAPI,
//! projected volumes): the payload goes into a fresh timestamped dir, `..data` is swapped
//! to it by one rename, and each visible name is a symlink through `..data` — so a reader in
//! the container sees the old set or the new one, never a mix, and updates reach running
//! containers through their bind mount.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

/// One file of the payload: relative path (may contain `/`), bytes, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Writes `files` into `dir` unless the current payload is identical; returns whether it
/// changed anything. `gid` (fsGroup) owns the files when given.
pub fn write(dir: &Path, files: &BTreeMap<String, File>, gid: Option<u32>) -> io::Result<bool> {
    for path in files.keys() {
        let p = Path::new(path);
        if path.is_empty()
            || path.starts_with("..")
            || p.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {path:?}: must be relative without '..'"),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    if current_matches(dir, files) {
        return Ok(false);
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let payload = dir.join(&stamp);
    std::fs::create_dir(&payload)?;
    for (path, file) in files {
        let target = payload.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&target, None, Some(g))?;
        }
    }
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755))?;
    // Swap `..data` in one rename of a fresh symlink over it.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data"))?;
    // Top-level names visible to the container.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(top), &link)?;
        }
    }
    // Names no longer in the payload go.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        if !tops.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(true)
}

fn current_matches(dir: &Path, files: &BTreeMap<String, File>) -> bool {
    let Ok(data) = std::fs::read_link(dir.join("..data")) else {
        return false;
    };
    let base = dir.join(data);
    let mut count = 0usize;
    let all_same = files.iter().all(|(path, file)| {
        let p = base.join(path);
        let same_mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o7777 == file.mode & 0o7777)
            .unwrap_or(false);
        count += 1;
        same_mode && std::fs::read(&p).map(|d| d == file.data).unwrap_or(false)
    });
    all_same && count_files(&base) == count
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&str, &str)]) -> BTreeMap<String, File> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    File {
                        data: v.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn updates_swap_and_stale_names_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(write(dir.path(), &payload(&[("a", "1"), ("sub/b", "2")]), None).expect("write"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).expect("a"),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/b")).expect("b"),
            "2"
        );
        assert!(!write(dir.path(), &payload(&[("a", "1"), ("sub/b", "2")]), None).expect("same"));
        assert!(write(dir.path(), &payload(&[("a", "3")]), None).expect("update"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).expect("a"),
            "3"
        );
        assert!(!dir.path().join("sub").exists());
        let stamps = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "the old payload dir is removed");
        assert!(write(dir.path(), &payload(&[("../x", "no")]), None).is_err());
    }
}
