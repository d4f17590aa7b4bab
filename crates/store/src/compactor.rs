//! Time-based automatic compaction for any `Store`: keep a configurable window of history
//! (5 minutes by default) so watchers can resume, and drop everything older.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::store::Store;
use crate::types::Revision;

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// History younger than this is kept.
    pub retention: Duration,
    /// How often to look for history to drop.
    pub interval: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            retention: Duration::from_secs(300),
            interval: Duration::from_secs(30),
        }
    }
}

/// Samples (when, revision) every interval and compacts to the newest revision that is
/// older than the retention window. Stops when the store is dropped.
pub fn spawn(store: Weak<dyn Store>, config: CompactionConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
        let mut ticker = tokio::time::interval(config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(store) = store.upgrade() else { return };
            let now = Instant::now();
            match store.current_revision().await {
                Ok(rev) => samples.push_back((now, rev)),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "compactor: reading revision failed"),
            }
            let mut target = None;
            while let Some(&(at, rev)) = samples.front() {
                if now.duration_since(at) >= config.retention {
                    target = Some(rev);
                    samples.pop_front();
                } else {
                    break;
                }
            }
            let Some(target) = target else { continue };
            let compacted = match store.compacted_revision().await {
                Ok(c) => c,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "compactor: reading compacted revision failed");
                    continue;
                }
            };
            if target <= compacted {
                continue;
            }
            match store.compact(target).await {
                Ok(()) => tracing::debug!(revision = target, "compacted"),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, revision = target, "compaction failed"),
            }
        }
    })
}

/// A store's running compactor (none until started): both backends hold one and stop it
/// when they close.
#[derive(Default)]
pub struct Compactor(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Compactor {
    /// Start compacting `store`; it stops by itself when the store is dropped.
    pub fn start(&self, store: &Arc<dyn Store>, config: CompactionConfig) {
        let handle = spawn(Arc::downgrade(store), config);
        if let Some(old) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(handle)
        {
            old.abort();
        }
    }

    pub fn stop(&self) {
        if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            c.abort();
        }
    }
}
