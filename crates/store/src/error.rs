//! Typed errors of the store layer.
//! Callers map these once to API `Status` objects at the HTTP edge.

use crate::Revision;

/// Everything a store operation can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// A single-key read found nothing (used by convenience helpers; `range` returns empty instead).
    #[error("key not found")]
    NotFound,
    /// A transaction's compare did not hold; nothing was written.
    #[error("compare failed")]
    CompareFailed,
    /// The requested revision has been compacted away.
    #[error(
        "required revision {requested} has been compacted; oldest available is {oldest_available}"
    )]
    Compacted {
        requested: Revision,
        oldest_available: Revision,
    },
    /// The requested revision is newer than anything written yet.
    #[error("required revision {requested} is a future revision (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// A watcher could not keep up and was ended; resume from the last revision it saw.
    #[error("watcher fell too far behind; resume after revision {last_revision}")]
    WatcherLagged { last_revision: Revision },
    /// The request itself is malformed (e.g. the same key twice in one transaction).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// The backend (SQLite, etcd) failed; the message carries its words.
    #[error("storage backend failure: {0}")]
    Backend(String),
    /// The backend cannot be reached or did not answer in time (an etcd cluster without a
    /// quorum, a request timeout). A write that failed this way may or may not have been
    /// applied; it was never acknowledged.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the write for its size (etcd's `--max-request-bytes`, 1.5 MiB
    /// by default, below capstan's own 6 MiB bound on a stored object).
    #[error("the write is larger than the store accepts: {0}")]
    TooLarge(String),
    /// The disk (or the backend's quota) is full: nothing was written; writes work again
    /// once space is freed.
    #[error("the store is out of space: {0}")]
    NoSpace(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if f.code == rusqlite::ErrorCode::DiskFull {
                return StoreError::NoSpace(e.to_string());
            }
        }
        StoreError::Backend(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Backend(format!("stored row has an unexpected type: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
