//! The audit log file: events go through a bounded queue to one writer thread (requests never
//! wait on the disk), one JSON line each, rotated by size with a cap on kept backups.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;

/// Events queued before new ones are dropped (upstream's batch buffer size).
pub const QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub path: PathBuf,
    /// Rotate once the file would pass this many bytes; 0: never.
    pub max_bytes: u64,
    /// Rotated files kept; 0: all of them.
    pub max_backups: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Vec<u8>>,
    /// Events handed to the queue, and events dropped because it was full or closed.
    pub events: Counter,
    pub dropped: Counter,
}

impl Writer {
    pub fn start(
        opts: LogOptions,
        events: Counter,
        dropped: Counter,
    ) -> Result<Writer, WriterError> {
        let file = open(&opts.path)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let failed = dropped.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(opts, file, rx, failed))
            .map_err(|source| WriterError::Open {
                path: "audit-log thread".into(),
                source,
            })?;
        Ok(Writer {
            tx,
            events,
            dropped,
        })
    }

    /// Queue one event (a JSON line without its newline). A full queue drops it and counts
    /// the drop: the request goes on (upstream's batch mode; its blocking mode would wait).
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(line) {
            Ok(()) => {
                self.events.inc();
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

fn open(path: &Path) -> Result<File, WriterError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| WriterError::Open {
            path: path.display().to_string(),
            source,
        })
}

fn write_loop(opts: LogOptions, mut file: File, rx: Receiver<Vec<u8>>, failed: Counter) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    while let Ok(mut line) = rx.recv() {
        line.push(b'\n');
        if opts.max_bytes > 0 && size > 0 && size + line.len() as u64 > opts.max_bytes {
            match rotate(&opts) {
                Ok(f) => {
                    file = f;
                    size = 0;
                }
                Err(e) => tracing::warn!(error = %e, "audit log rotation failed; writing on"),
            }
        }
        match file.write_all(&line) {
            Ok(()) => size += line.len() as u64,
            Err(e) => {
                failed.inc();
                tracing::warn!(error = %e, path = %opts.path.display(), "audit event not written");
            }
        }
    }
}

/// `audit.log` → `audit-2026-12-01T21-47-29.123.log` (lumberjack's naming, which upstream
/// uses), then the oldest backups beyond `max_backups` go.
fn rotate(opts: &LogOptions) -> Result<File, std::io::Error> {
    let (stem, ext) = split_name(&opts.path);
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.3f");
    let mut backup = opts.path.with_file_name(format!("{stem}-{stamp}{ext}"));
    // Two rotations within a millisecond must not overwrite one another.
    let mut n = 1;
    while backup.exists() {
        backup = opts.path.with_file_name(format!("{stem}-{stamp}-{n}{ext}"));
        n += 1;
    }
    std::fs::rename(&opts.path, &backup)?;
    if opts.max_backups > 0 {
        let mut backups = backups(opts)?;
        backups.sort();
        let excess = backups.len().saturating_sub(opts.max_backups);
        for old in backups.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
    }
    open(&opts.path).map_err(|e| match e {
        WriterError::Open { source, .. } => source,
    })
}

fn split_name(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// The rotated files of this log, oldest first by name (the timestamp sorts).
fn backups(opts: &LogOptions) -> Result<Vec<PathBuf>, std::io::Error> {
    let (stem, ext) = split_name(&opts.path);
    let dir = opts
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{stem}-");
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix) && n.ends_with(&ext) && n.len() > prefix.len() + ext.len()
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_backups() {
        let dir = std::env::temp_dir().join(format!("capstan-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = LogOptions {
            path: dir.join("audit.log"),
            max_bytes: 100,
            max_backups: 2,
        };
        let w = Writer::start(opts.clone(), Counter::default(), Counter::default()).unwrap();
        for i in 0..20 {
            w.send(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).into_bytes());
        }
        drop(w);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let last = std::fs::read_to_string(&opts.path).unwrap_or_default();
            if last.contains("\"n\":19") || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        let kept = backups(&opts).unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let current = std::fs::read_to_string(&opts.path).unwrap();
        assert!(current.contains("\"n\":19"));
        assert!(current.len() <= 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
