//! The single writer thread: it owns the writing connection, batches every queued
//! transaction into one SQLite transaction (group commit, one fsync per batch), publishes
//! the committed events to the watch hub, and runs compaction in small steps between batches.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::latest::Latest;
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
/// Keys examined per compaction step.
const COMPACT_STEP_KEYS: i64 = 1024;

struct Compaction {
    /// Keys up to and including this one are done.
    after_key: Option<Vec<u8>>,
    /// History rows with id below this are at or before the compaction revision.
    end_id: i64,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

pub struct Writer {
    /// Why the last batch failed for want of space; cleared by the next commit.
    pub no_space: Arc<Mutex<Option<String>>>,
    conn: Connection,
    hub: Arc<WatchHub>,
    latest: Arc<Latest>,
    revision: Revision,
    compacted: Revision,
    compaction: Option<Compaction>,
}

/// The newest history row of a key, as the writer needs it.
struct Live {
    id: i64,
    /// None for a tombstone.
    value: Option<Bytes>,
    create_rev: Revision,
    version: i64,
}

impl Live {
    /// The key's value if it is live (not a tombstone).
    fn to_kv(&self, key: &Bytes) -> Option<KeyValue> {
        Some(KeyValue {
            key: key.clone(),
            value: self.value.clone()?,
            create_revision: self.create_rev,
            mod_revision: revision_of(self.id),
            version: self.version,
        })
    }
}

impl Writer {
    pub fn new(conn: Connection, hub: Arc<WatchHub>, latest: Arc<Latest>) -> Result<Self> {
        let revision = read_meta(&conn, "revision")?;
        let compacted = read_meta(&conn, "compacted")?;
        Ok(Writer {
            no_space: Arc::new(Mutex::new(None)),
            conn,
            hub,
            latest,
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
                if let Err(e @ (StoreError::Backend(_) | StoreError::NoSpace(_))) = &r {
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
                self.set_no_space(None);
                self.latest.apply(self.revision, &events);
                self.hub.publish(self.revision, &events);
                for ((_, reply), r) in txns.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                if let StoreError::NoSpace(why) = &e {
                    self.set_no_space(Some(why.clone()));
                    tracing::warn!(error = %e, "store batch refused: out of space; rolled back");
                } else {
                    tracing::error!(error = %e, "store batch failed; rolled back");
                }
                for (_, reply) in txns {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn set_no_space(&self, why: Option<String>) {
        let mut slot = self.no_space.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() || why.is_some() {
            *slot = why;
        }
    }

    fn start_compaction(&mut self, rev: Revision, reply: oneshot::Sender<Result<()>>) {
        if rev > self.revision {
            let _ = reply.send(Err(StoreError::FutureRevision {
                requested: rev,
                current: self.revision,
            }));
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
        self.compacted = rev;
        match self.compaction.as_mut() {
            // Keys already passed keep some extra history until the next pass; that is safe.
            Some(c) => {
                c.end_id = first_id(rev + 1);
                c.waiters.push(reply);
            }
            None => {
                self.compaction = Some(Compaction {
                    after_key: None,
                    end_id: first_id(rev + 1),
                    waiters: vec![reply],
                })
            }
        }
    }

    fn compact_step(&mut self) {
        let Some(c) = self.compaction.as_mut() else {
            return;
        };
        let result = (|| -> Result<bool> {
            let tx = self.conn.transaction()?;
            let heads: Vec<(Vec<u8>, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT key, id FROM current WHERE ?1 IS NULL OR key > ?1 ORDER BY key LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![c.after_key, COMPACT_STEP_KEYS], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (key, head) in &heads {
                compact_key(&tx, key, *head, c.end_id)?;
            }
            tx.commit()?;
            let done = heads.len() < COMPACT_STEP_KEYS as usize;
            c.after_key = heads.into_iter().last().map(|(k, _)| k);
            Ok(done)
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
        let pages = |name: &str| -> i64 {
            self.conn
                .pragma_query_value(None, name, |r| r.get(0))
                .unwrap_or(0)
        };
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

// Hot-path lookups avoid joins: SQLite re-prepares a join statement whenever its tables'
// size estimates move, which under steady inserts is nearly every execution.
fn head_id(conn: &Connection, key: &[u8]) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM current WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn load_head(conn: &Connection, key: &[u8]) -> Result<Option<Live>> {
    let Some(id) = head_id(conn, key)? else {
        return Ok(None);
    };
    Ok(conn
        .prepare_cached("SELECT value, create_rev, version FROM history WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Live {
                id,
                value: r.get::<_, Option<Vec<u8>>>(0)?.map(Bytes::from),
                create_rev: r.get(1)?,
                version: r.get(2)?,
            })
        })
        .optional()?)
}

/// The key's mod_revision, or 0 if it does not exist (absent or deleted).
fn current_mod_revision(conn: &Connection, key: &[u8]) -> Result<Revision> {
    let Some(id) = head_id(conn, key)? else {
        return Ok(0);
    };
    let live: Option<bool> = conn
        .prepare_cached("SELECT value IS NOT NULL FROM history WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(if live == Some(true) {
        revision_of(id)
    } else {
        0
    })
}

struct ChainRow {
    is_tombstone: bool,
    prev_id: Option<i64>,
}

fn chain_row(conn: &Connection, id: i64) -> Result<Option<ChainRow>> {
    Ok(conn
        .prepare_cached("SELECT value IS NULL, prev_id FROM history WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(ChainRow {
                is_tombstone: r.get(0)?,
                prev_id: r.get(1)?,
            })
        })
        .optional()?)
}

/// Compact one key: keep its newest version below `end_id` (unless it is a tombstone),
/// delete every older one, and forget the key once only a compacted tombstone is left.
fn compact_key(conn: &Connection, key: &[u8], head: i64, end_id: i64) -> Result<()> {
    let mut id = head;
    let Some(mut row) = chain_row(conn, id)? else {
        return Ok(());
    };
    while id >= end_id {
        let Some(prev) = row.prev_id else {
            return Ok(());
        };
        id = prev;
        match chain_row(conn, id)? {
            Some(r) => row = r,
            None => return Ok(()),
        }
    }
    // `id` is the version visible at the compaction revision; everything before it goes.
    let mut older = row.prev_id;
    while let Some(p) = older {
        let Some(r) = chain_row(conn, p)? else { break };
        conn.prepare_cached("DELETE FROM history WHERE id = ?1")?
            .execute([p])?;
        older = r.prev_id;
    }
    if row.is_tombstone {
        conn.prepare_cached("DELETE FROM history WHERE id = ?1")?
            .execute([id])?;
        if id == head {
            conn.prepare_cached("DELETE FROM current WHERE key = ?1")?
                .execute([key])?;
        }
    } else if row.prev_id.is_some() {
        conn.prepare_cached("UPDATE history SET prev_id = NULL WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(())
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
        return Err(StoreError::InvalidRequest(format!(
            "too many operations in one transaction ({})",
            txn.ops.len()
        )));
    }
    let mut seen = HashSet::with_capacity(txn.ops.len());
    for op in &txn.ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::InvalidRequest(
                "duplicate key in one transaction".into(),
            ));
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
            current.push(load_head(conn, &c.key)?.and_then(|l| l.to_kv(&c.key)));
        }
        return Ok(TxnResponse::Failed {
            revision: *revision,
            current,
        });
    }
    let rev = *revision + 1;
    let mut prev_kvs = Vec::with_capacity(txn.ops.len());
    let mut changed = false;
    for (i, op) in txn.ops.iter().enumerate() {
        let key = op.key();
        let head = load_head(conn, key)?;
        let prev_kv = head.as_ref().and_then(|h| h.to_kv(key));
        let id = row_id(rev, i);
        match op {
            Op::Put { value, .. } => {
                let (create_rev, version) = match &prev_kv {
                    Some(p) => (p.create_revision, p.version + 1),
                    None => (rev, 1),
                };
                conn.prepare_cached(
                    "INSERT INTO history(id, key, value, create_rev, version, prev_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![id, &key[..], &value[..], create_rev, version, head.as_ref().map(|h| h.id)])?;
                conn.prepare_cached("INSERT OR REPLACE INTO current(key, id) VALUES (?1, ?2)")?
                    .execute(params![&key[..], id])?;
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
                let Some(prev_kv) = prev_kv else {
                    prev_kvs.push(None);
                    continue;
                };
                conn.prepare_cached(
                    "INSERT INTO history(id, key, value, create_rev, version, prev_id) VALUES (?1, ?2, NULL, ?3, 0, ?4)",
                )?
                .execute(params![id, &key[..], prev_kv.create_revision, head.as_ref().map(|h| h.id)])?;
                // The tombstone stays the key's head until compaction, so reads at older
                // revisions can still walk to the deleted versions.
                conn.prepare_cached("INSERT OR REPLACE INTO current(key, id) VALUES (?1, ?2)")?
                    .execute(params![&key[..], id])?;
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
    Ok(TxnResponse::Succeeded {
        revision: *revision,
        prev_kvs,
    })
}
