//! The `Store` trait: the one storage contract every backend (SQLite, etcd) implements,
//! plus convenience helpers built only on the trait's operations.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::{Result, StoreError};
use crate::types::{
    KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, Txn, TxnResponse, WatchEvent,
};

/// An ordered stream of committed changes. It ends with an `Err` when the watcher
/// is cut off (lagged, compacted, closed); events already yielded stay valid.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<Arc<WatchEvent>>> + Send>>,
    progress: WatchProgress,
}

/// How far a stream has got, for Kubernetes bookmarks. Shared by a stream and any stream
/// that wraps it (the encryption layer), so the wrapper reports what the inner one knows.
#[derive(Clone)]
pub struct WatchProgress {
    live: Arc<AtomicBool>,
    /// Set by backends whose watches do not see the store's revision move (etcd): the
    /// revision up to which every change in range has been queued to the stream.
    reported: Option<Arc<AtomicI64>>,
}

impl WatchProgress {
    /// A stream that is live once `live` is set: from then on, whenever it has nothing
    /// ready, it has yielded every change up to the store's current revision.
    pub fn after_replay(live: Arc<AtomicBool>) -> Self {
        WatchProgress {
            live,
            reported: None,
        }
    }

    /// A stream that reports its own progress revision (always live).
    pub fn reported(revision: Arc<AtomicI64>) -> Self {
        WatchProgress {
            live: Arc::new(AtomicBool::new(true)),
            reported: Some(revision),
        }
    }
}

impl WatchStream {
    pub fn new(
        inner: Pin<Box<dyn Stream<Item = Result<Arc<WatchEvent>>> + Send>>,
        progress: WatchProgress,
    ) -> Self {
        WatchStream { inner, progress }
    }

    /// True once history replay is over. From then on, whenever the stream has nothing
    /// ready, every change up to `progress_revision` (when the stream reports one) or else
    /// up to the store's current revision has been yielded: a watch can report that
    /// revision as its progress (a Kubernetes bookmark).
    pub fn is_live(&self) -> bool {
        self.progress.live.load(Ordering::Acquire)
    }

    /// The revision this stream vouches for, when its backend reports one (read it before
    /// draining what is ready, then report it only if the stream is live).
    pub fn progress_revision(&self) -> Option<Revision> {
        self.progress
            .reported
            .as_ref()
            .map(|r| r.load(Ordering::Acquire))
    }

    /// What this stream knows of its progress, for a stream that wraps it.
    pub fn progress(&self) -> WatchProgress {
        self.progress.clone()
    }
}

impl Stream for WatchStream {
    type Item = Result<Arc<WatchEvent>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Read a range of keys, at the latest or a past revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Atomically check every compare and, if all hold, apply every op at one new revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Stream every change to keys in `range` with revision >= `start_revision`
    /// (history first, then live). `start_revision == 0` means "changes after now".
    async fn watch(&self, range: KeyRange, start_revision: Revision) -> Result<WatchStream>;

    /// Drop history older than `revision`: reads at revisions >= `revision` keep working,
    /// watches must start after it.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The revision up to which history has been compacted (0 if never).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Whether writes are expected to succeed: the last write did not fail for want of
    /// space (readiness reports this).
    fn write_health(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the value of `key` read at `mod_revision` must be written again even when the
    /// object is unchanged (stored under an encryption provider or key that is no longer the
    /// first: upstream's "stale" read, which is how `kubectl replace` re-encrypts).
    fn needs_rewrite(&self, _key: &[u8], _mod_revision: Revision) -> bool {
        false
    }
}

/// Helpers for the common single-key cases, available on every store.
#[async_trait]
pub trait StoreExt: Store {
    /// Read one key at the latest revision.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let resp = self
            .range(RangeRequest::new(KeyRange::key(Bytes::copy_from_slice(
                key,
            ))))
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Create a key that must not exist. Returns the new revision, or `CompareFailed`.
    async fn create(&self, key: &[u8], value: Bytes) -> Result<Revision> {
        let key = Bytes::copy_from_slice(key);
        match self
            .txn(Txn::new().when(key.clone(), 0).put(key, value))
            .await?
        {
            TxnResponse::Succeeded { revision, .. } => Ok(revision),
            TxnResponse::Failed { .. } => Err(StoreError::CompareFailed),
        }
    }

    /// Write a key unconditionally. Returns the new revision.
    async fn put(&self, key: &[u8], value: Bytes) -> Result<Revision> {
        Ok(self
            .txn(Txn::new().put(Bytes::copy_from_slice(key), value))
            .await?
            .revision())
    }

    /// Replace a key only if it is unchanged since `mod_revision`.
    async fn update(&self, key: &[u8], value: Bytes, mod_revision: Revision) -> Result<Revision> {
        let key = Bytes::copy_from_slice(key);
        match self
            .txn(Txn::new().when(key.clone(), mod_revision).put(key, value))
            .await?
        {
            TxnResponse::Succeeded { revision, .. } => Ok(revision),
            TxnResponse::Failed { .. } => Err(StoreError::CompareFailed),
        }
    }

    /// Delete a key only if it is unchanged since `mod_revision`; returns the deleted value.
    async fn delete_if(&self, key: &[u8], mod_revision: Revision) -> Result<(Revision, KeyValue)> {
        let key = Bytes::copy_from_slice(key);
        match self
            .txn(Txn::new().when(key.clone(), mod_revision).delete(key))
            .await?
        {
            TxnResponse::Succeeded {
                revision,
                mut prev_kvs,
            } => match prev_kvs.pop().flatten() {
                Some(prev) => Ok((revision, prev)),
                None => Err(StoreError::NotFound),
            },
            TxnResponse::Failed { .. } => Err(StoreError::CompareFailed),
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
