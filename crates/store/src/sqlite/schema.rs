//! The SQLite layout and connection settings of the store.
//! `history` holds every version (id = revision << 20 | op index), chained per key through
//! `prev_id`; `current` maps each key to its newest version (a tombstone until compaction).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::types::Revision;

/// Bits of a history row id that number the ops inside one revision.
pub const OP_BITS: u32 = 20;
pub const MAX_OPS_PER_TXN: usize = 1 << OP_BITS;

pub fn row_id(revision: Revision, op: usize) -> i64 {
    (revision << OP_BITS) | op as i64
}

/// Smallest row id of `revision`.
pub fn first_id(revision: Revision) -> i64 {
    revision << OP_BITS
}

pub fn revision_of(id: i64) -> Revision {
    id >> OP_BITS
}

const DDL: &str = "
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB,              -- NULL marks a delete
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    prev_id INTEGER          -- the key's previous history row (live or tombstone), if any
);
-- No index on history(key): it would add a random-page write to every put. Reads at past
-- revisions and compaction walk the prev_id chain from `current` instead.
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 1), ('compacted', 0);
";

fn common_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "cache_size", -16_000i64)?; // up to 16 MB page cache per connection, allocated on use
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Open the one writing connection, creating the schema if needed.
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // An existing store is opened without writing anything (a restart on a full disk
    // must work): the schema statements below only run for a new one.
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        // auto_vacuum must be chosen before the first table exists; it lets compaction
        // give free pages back to the file system (incremental_vacuum).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    // A checkpoint from another thread contends with the writer's fsyncs and was measured
    // 3x slower; checkpointing on the writer every 4000 pages (16 MB) is the better trade.
    conn.pragma_update(None, "wal_autocheckpoint", 4000i64)?;
    common_pragmas(&conn)?;
    if !exists {
        conn.execute_batch(DDL)?;
    }
    Ok(conn)
}

pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    common_pragmas(&conn)?;
    Ok(conn)
}

pub fn read_meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub fn write_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta(name, value) VALUES (?1, ?2)")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}
