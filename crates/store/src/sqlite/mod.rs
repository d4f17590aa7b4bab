//! The embedded SQLite backend: one writer thread with group commit, a pool of read
//! connections, the in-memory watch hub, and automatic time-based compaction.

mod latest;
mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::compactor::{CompactionConfig, Compactor};
use crate::error::{Result, StoreError};
use crate::store::{Store, WatchStream};
use crate::types::{KeyRange, RangeRequest, RangeResponse, Revision, Txn, TxnResponse};
use crate::watch_hub::{watch_stream, HubConfig, ReplayFn, WatchHub};
use latest::Latest;
use writer::{WriteRequest, Writer};

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// Read connections kept open (concurrent reads beyond this wait for one).
    pub readers: usize,
    pub hub: HubConfig,
    /// Automatic compaction; `None` keeps all history until `compact` is called.
    pub compaction: Option<CompactionConfig>,
}

impl SqliteConfig {
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteConfig {
            path: path.as_ref().to_path_buf(),
            readers: 4,
            hub: HubConfig::default(),
            compaction: Some(CompactionConfig::default()),
        }
    }
}

/// Read connections shared by all readers; a connection is used by one blocking task at a time.
/// At most `max_idle` reads run at once: each connection fills a page cache of its own (up
/// to 16 MB), and opening one per concurrent read let a burst of reads (a namespace of
/// 5,000 pods being deleted) hold 240 MB of page caches.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    permits: Arc<tokio::sync::Semaphore>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => Ok(schema::open_reader(&self.path)?),
        }
    }
    fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.clone();
        // Held until the blocking read ends, even if the caller stops waiting for it.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.take()?;
            let out = f(&mut conn);
            pool.give(conn);
            out
        })
        .await
        .map_err(read_task_failure)?
    }
}

/// A read that never ran because the runtime is shutting down (tokio cancels blocking tasks
/// not yet started) is the store closing, a 503 and not the server's fault; only a read that
/// panicked is a backend failure. At SIGTERM every watch's pending read used to be logged as
/// an ERROR 500.
fn read_task_failure(e: tokio::task::JoinError) -> StoreError {
    if e.is_cancelled() {
        StoreError::Closed
    } else {
        StoreError::Backend(format!("read task failed: {e}"))
    }
}

pub struct SqliteStore {
    tx: Mutex<Option<std_mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<ReadPool>,
    latest: Arc<Latest>,
    hub: Arc<WatchHub>,
    compactor: Compactor,
    /// Set by the writer while the disk is full.
    no_space: Arc<Mutex<Option<String>>>,
}

impl SqliteStore {
    /// Open (or create) the database. Must be called inside a tokio runtime when automatic
    /// compaction is configured.
    pub fn open(config: SqliteConfig) -> Result<Arc<Self>> {
        if let Some(dir) = config.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
            }
        }
        let conn = schema::open_writer(&config.path)?;
        let current = schema::read_meta(&conn, "revision")?;
        let hub = Arc::new(WatchHub::new(current, config.hub.clone()));
        let mut load = schema::open_reader(&config.path)?;
        let live = reader::range(
            &mut load,
            &RangeRequest::new(KeyRange::prefix(Bytes::new())),
        )?;
        drop(load);
        let latest = Arc::new(Latest::new(live.revision, live.kvs));
        let writer = Writer::new(conn, hub.clone(), latest.clone())?;
        let no_space = writer.no_space.clone();
        let (tx, rx) = std_mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("spawn writer: {e}")))?;
        let store = Arc::new(SqliteStore {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(ReadPool {
                path: config.path.clone(),
                idle: Mutex::new(Vec::new()),
                max_idle: config.readers.max(1),
                permits: Arc::new(tokio::sync::Semaphore::new(config.readers.max(1))),
            }),
            latest,
            hub,
            compactor: Compactor::default(),
            no_space,
        });
        if let Some(cc) = config.compaction {
            store
                .compactor
                .start(&(store.clone() as Arc<dyn Store>), cc);
        }
        Ok(store)
    }

    fn send(&self, req: WriteRequest) -> Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(req).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Stop accepting writes, finish queued ones, end watchers and wait for the writer.
    pub fn close(&self) {
        self.compactor.stop();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        self.hub.close();
    }

    pub fn watcher_count(&self) -> usize {
        self.hub.watcher_count()
    }

    fn replay_fn(&self) -> ReplayFn {
        let pool = self.readers.clone();
        Arc::new(
            move |range: KeyRange, from: Revision, to: Revision, limit: usize| {
                let pool = pool.clone();
                Box::pin(async move {
                    pool.with(move |c| reader::replay(c, &range, from, to, limit))
                        .await
                })
            },
        )
    }
}

/// A consistent copy of every key at the database's current revision, read in one
/// transaction over a read-only connection: it works while a server has the file open.
pub fn snapshot_file(path: &Path) -> Result<crate::snapshot::Snapshot> {
    let mut conn = schema::open_reader(path)?;
    let all = reader::range(
        &mut conn,
        &RangeRequest::new(KeyRange::prefix(Bytes::new())),
    )?;
    Ok(crate::snapshot::Snapshot {
        revision: all.revision,
        kvs: all.kvs,
    })
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if let Some(resp) = self.latest.range(&req) {
            return Ok(resp);
        }
        self.readers.with(move |c| reader::range(c, &req)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteRequest::Txn(txn, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, range: KeyRange, start_revision: Revision) -> Result<WatchStream> {
        if start_revision > 0 {
            let compacted = self.compacted_revision().await?;
            if start_revision <= compacted {
                return Err(StoreError::Compacted {
                    requested: start_revision,
                    oldest_available: compacted + 1,
                });
            }
        }
        let sub = self.hub.subscribe(range.clone(), start_revision)?;
        Ok(watch_stream(range, start_revision, sub, self.replay_fn()))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteRequest::Compact(revision, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision> {
        // Every committed batch is published to the hub right after its commit.
        Ok(self.hub.published())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.readers.with(|c| reader::meta(c, "compacted")).await
    }

    fn write_health(&self) -> Result<()> {
        match &*self.no_space.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(StoreError::NoSpace(why.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_cancelled_by_shutdown_is_the_store_closing_and_a_panic_a_failure() {
        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        let e = cancelled.await.unwrap_err();
        assert!(matches!(read_task_failure(e), StoreError::Closed));

        let panicked = tokio::spawn(async { panic!("boom") });
        let e = panicked.await.unwrap_err();
        match read_task_failure(e) {
            StoreError::Backend(m) => assert!(m.starts_with("read task failed"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
