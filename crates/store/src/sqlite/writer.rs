//! The single writer thread: it owns the writing connection, batches every queued
//! transaction into one SQLite transaction (group commit, one fsync per batch), publishes
//! the committed events to the watch hub, and runs compaction in small steps between batches.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::schema::{first_id, read_meta, revision_of, row_id, write_meta, MAX_OPS_PER_TXN};
use crate::error::{Result, StoreError};
use crate::types::{EventKind, KeyValue, Op, Revision, Txn, TxnResponse, WatchEvent};
use crate::watch_hub::WatchHub;

pub enum WriteRequest {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

/// Most transactions committed together; bounds the latency of the batch's first writer.
const MAX_BATCH: usize = 2048;
/// History rows removed per compaction step.
const COMPACT_STEP_ROWS: i64 = 4096;

struct Compaction {
    /// Next history row id to examine.
    next_id: i64,
    /// Rows with id below this are at or before the compaction revision.
    end_id: i64,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

pub struct Writer {
    conn: Connection,
    hub: Arc<WatchHub>,
    revision: Revision,
    compacted: Revision,
    compaction: Option<Compaction>,
}

/// The current version of a key, as the writer needs it.
struct Live {
    id: i64,
    value: Bytes,
    create_rev: Revision,
    version: i64,
}

impl Live {
    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_rev,
            mod_revision: revision_of(self.id),
            version: self.version,
        }
    }
}

impl Writer {
    pub fn new(conn: Connection, hub: Arc<WatchHub>) -> Result<Self> {
        let revision = read_meta(&conn, "revision")?;
        let compacted = read_meta(&conn, "compacted")?;
        Ok(Writer {
            conn,
            hub,
            revision,
            compacted,
            compaction: None,
        })
    }

    pub fn run(mut self, rx: Receiver<WriteRequest>) {
        loop {
            let first = if self.compaction.is_some() {
                match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                self.process(batch);
            }
            if self.compaction.is_some() {
                self.compact_step();
            }
        }
        self.hub.close();
        // Fold the WAL back into the database on a clean shutdown.
        let _ = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    }

    fn process(&mut self, batch: Vec<WriteRequest>) {
        let mut txns = Vec::with_capacity(batch.len());
        for req in batch {
            match req {
                WriteRequest::Txn(t, reply) => txns.push((t, reply)),
                WriteRequest::Compact(rev, reply) => self.start_compaction(rev, reply),
            }
        }
        if txns.is_empty() {
            return;
        }
        let start_revision = self.revision;
        let mut results = Vec::with_capacity(txns.len());
        let mut events: Vec<Arc<WatchEvent>> = Vec::new();
        let outcome = (|| -> Result<()> {
            let tx = self.conn.transaction()?;
            let mut revision = start_revision;
            for (txn, _) in &txns {
                let r = apply_txn(&tx, txn, &mut revision, &mut events);
                if let Err(e @ StoreError::Backend(_)) = &r {
                    // The transaction may be half-applied: roll back the whole batch.
                    return Err(e.clone());
                }
                results.push(r);
            }
            if revision != start_revision {
                write_meta(&tx, "revision", revision)?;
            }
            tx.commit()?;
            self.revision = revision;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                self.hub.publish(self.revision, &events);
                for ((_, reply), r) in txns.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store batch failed; rolled back");
                for (_, reply) in txns {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn start_compaction(&mut self, rev: Revision, reply: oneshot::Sender<Result<()>>) {
        if rev > self.revision {
            let _ = reply.send(Err(StoreError::FutureRevision { requested: rev, current: self.revision }));
            return;
        }
        if rev <= self.compacted {
            let _ = reply.send(Err(StoreError::Compacted {
                requested: rev,
                oldest_available: self.compacted,
            }));
            return;
        }
        // Readers stop asking for older revisions as soon as this commits.
        if let Err(e) = write_meta(&self.conn, "compacted", rev) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        let start_id = match self.compaction.take() {
            Some(c) => {
                let mut waiters = c.waiters;
                waiters.push(reply);
                self.compaction = Some(Compaction { next_id: c.next_id, end_id: first_id(rev + 1), waiters });
                self.compacted = rev;
                return;
            }
            None => 0,
        };
        self.compacted = rev;
        self.compaction = Some(Compaction { next_id: start_id, end_id: first_id(rev + 1), waiters: vec![reply] });
    }

    fn compact_step(&mut self) {
        let Some(c) = self.compaction.as_mut() else { return };
        let result = (|| -> Result<bool> {
            let step_end: i64 = self
                .conn
                .prepare_cached("SELECT id FROM history WHERE id >= ?1 ORDER BY id LIMIT 1 OFFSET ?2")?
                .query_row(params![c.next_id, COMPACT_STEP_ROWS], |r| r.get(0))
                .optional()?
                .unwrap_or(i64::MAX)
                .min(c.end_id);
            // Remove tombstones and every version superseded at or before the compaction
            // revision; the latest version of each key at that revision stays readable.
            self.conn
                .prepare_cached(
                    "DELETE FROM history WHERE id >= ?1 AND id < ?2 AND (value IS NULL OR EXISTS \
                     (SELECT 1 FROM history n WHERE n.key = history.key AND n.id > history.id AND n.id < ?3))",
                )?
                .execute(params![c.next_id, step_end, c.end_id])?;
            c.next_id = step_end;
            Ok(step_end >= c.end_id)
        })();
        match result {
            Ok(false) => {}
            Ok(true) => {
                let done = self.compaction.take();
                self.reclaim_space();
                if let Some(done) = done {
                    for w in done.waiters {
                        let _ = w.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "compaction step failed");
                if let Some(done) = self.compaction.take() {
                    for w in done.waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Give free pages back once a good share of the file is free, and keep the WAL short.
    fn reclaim_space(&mut self) {
        let pages = |name: &str| -> i64 { self.conn.pragma_query_value(None, name, |r| r.get(0)).unwrap_or(0) };
        let free = pages("freelist_count");
        let total = pages("page_count");
        if free > 256 && free * 4 > total {
            if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
                tracing::warn!(error = %e, "incremental vacuum failed");
            }
        }
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(error = %e, "wal checkpoint failed");
        }
    }
}

fn load_live(conn: &Connection, key: &[u8]) -> Result<Option<Live>> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.id, h.value, h.create_rev, h.version FROM current c JOIN history h ON h.id = c.id WHERE c.key = ?1",
    )?;
    Ok(stmt
        .query_row([key], |r| {
            Ok(Live {
                id: r.get(0)?,
                value: r.get::<_, Option<Vec<u8>>>(1)?.map(Bytes::from).unwrap_or_default(),
                create_rev: r.get(2)?,
                version: r.get(3)?,
            })
        })
        .optional()?)
}

fn current_mod_revision(conn: &Connection, key: &[u8]) -> Result<Revision> {
    let id: Option<i64> = conn
        .prepare_cached("SELECT id FROM current WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(id.map(revision_of).unwrap_or(0))
}

/// Apply one transaction inside the batch's SQLite transaction. A request error (bad txn,
/// failed compare) is that transaction's answer; a SQLite error fails the whole batch.
fn apply_txn(
    conn: &Connection,
    txn: &Txn,
    revision: &mut Revision,
    events: &mut Vec<Arc<WatchEvent>>,
) -> Result<TxnResponse> {
    if txn.ops.len() >= MAX_OPS_PER_TXN {
        return Err(StoreError::InvalidRequest(format!("too many operations in one transaction ({})", txn.ops.len())));
    }
    let mut seen = HashSet::with_capacity(txn.ops.len());
    for op in &txn.ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::InvalidRequest("duplicate key in one transaction".into()));
        }
    }
    let mut ok = true;
    for c in &txn.compares {
        if current_mod_revision(conn, &c.key)? != c.mod_revision {
            ok = false;
            break;
        }
    }
    if !ok {
        let mut current = Vec::with_capacity(txn.compares.len());
        for c in &txn.compares {
            current.push(load_live(conn, &c.key)?.map(|l| l.to_kv(&c.key)));
        }
        return Ok(TxnResponse::Failed { revision: *revision, current });
    }
    let rev = *revision + 1;
    let mut prev_kvs = Vec::with_capacity(txn.ops.len());
    let mut changed = false;
    for (i, op) in txn.ops.iter().enumerate() {
        let key = op.key();
        let prev = load_live(conn, key)?;
        let id = row_id(rev, i);
        match op {
            Op::Put { value, .. } => {
                let (create_rev, version) = match &prev {
                    Some(p) => (p.create_rev, p.version + 1),
                    None => (rev, 1),
                };
                conn.prepare_cached(
                    "INSERT INTO history(id, key, value, create_rev, version, prev_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![id, &key[..], &value[..], create_rev, version, prev.as_ref().map(|p| p.id)])?;
                conn.prepare_cached("INSERT OR REPLACE INTO current(key, id) VALUES (?1, ?2)")?
                    .execute(params![&key[..], id])?;
                let prev_kv = prev.as_ref().map(|p| p.to_kv(key));
                events.push(Arc::new(WatchEvent {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: create_rev,
                        mod_revision: rev,
                        version,
                    },
                    prev_kv: prev_kv.clone(),
                }));
                prev_kvs.push(prev_kv);
                changed = true;
            }
            Op::Delete { .. } => {
                let Some(p) = prev else {
                    prev_kvs.push(None);
                    continue;
                };
                conn.prepare_cached(
                    "INSERT INTO history(id, key, value, create_rev, version, prev_id) VALUES (?1, ?2, NULL, ?3, 0, ?4)",
                )?
                .execute(params![id, &key[..], p.create_rev, p.id])?;
                conn.prepare_cached("DELETE FROM current WHERE key = ?1")?.execute([&key[..]])?;
                let prev_kv = p.to_kv(key);
                events.push(Arc::new(WatchEvent {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.clone(),
                        value: Bytes::new(),
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                    },
                    prev_kv: Some(prev_kv.clone()),
                }));
                prev_kvs.push(Some(prev_kv));
                changed = true;
            }
        }
    }
    if changed {
        *revision = rev;
    }
    Ok(TxnResponse::Succeeded { revision: *revision, prev_kvs })
}
