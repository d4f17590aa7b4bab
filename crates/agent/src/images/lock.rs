//! The store's lock file: readers and unpackers share it, an import's commit, a pull's commit
//! and a removal hold it alone; `flock` so it holds across processes and is freed on exit.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::ImagesError;

/// Held until dropped (closing the file releases the `flock`).
pub(crate) struct StoreLock {
    _file: File,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
}

impl StoreLock {
    /// Blocks until the lock is granted; each call opens its own file description, so two
    /// threads of one process exclude each other as two processes do.
    pub(crate) fn acquire(path: &Path, mode: LockMode) -> Result<StoreLock, ImagesError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| ImagesError::Io {
                context: format!("opening the lock file {}", path.display()),
                source: e,
            })?;
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(ImagesError::Io {
                        context: format!("locking {}", path.display()),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(StoreLock { _file: file })
    }
}
