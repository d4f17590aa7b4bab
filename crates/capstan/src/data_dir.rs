//! The data directory: one server at a time (an exclusive lock held for the process's
//! life), and private to its owner (0700, files 0600), since it holds every Secret, the CA
//! key and the admin token.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// An open, locked data directory; the lock goes when this is dropped (or the process ends).
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

pub fn open(path: &Path) -> anyhow::Result<DataDir> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let lock_path = path.join("lock");
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor this File owns.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let mut holder = String::new();
        let _ = lock.read_to_string(&mut holder);
        let holder = holder.trim();
        bail!(
            "{} is in use by another capstan server{}; stop it, or give this one another --data-dir",
            path.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            }
        );
    }
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    lock.sync_all()?;
    tighten(&path)?;
    Ok(DataDir { path, _lock: lock })
}

/// Make the directory and everything in it (one level of subdirectories: pki/) private.
fn tighten(dir: &Path) -> anyhow::Result<()> {
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            set_mode(&entry.path(), 0o700)?;
            for inner in std::fs::read_dir(entry.path())? {
                let inner = inner?;
                if inner.file_type()?.is_file() {
                    set_mode(&inner.path(), 0o600)?;
                }
            }
        } else if kind.is_file() {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

/// Files the server creates from now on (SQLite's database, WAL and shared memory among
/// them) are private to the owner.
pub fn private_umask() {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}
