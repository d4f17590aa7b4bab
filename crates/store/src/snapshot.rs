//! Backups: a consistent copy of every key at one revision, its file format, and restoring
//! it into an empty store so every key keeps its revisions (Kubernetes resourceVersions) —
//! to SQLite directly (`sqlite::import`), to any other store by spending revisions.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;

use crate::error::{Result, StoreError};
use crate::store::Store;
use crate::types::{KeyRange, KeyValue, RangeRequest, Revision, Txn};

/// Every live key at `revision`, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
}

const MAGIC: &[u8] = b"capstan-snapshot 1\n";
const PAGE: usize = 1000;

/// Keys that belong to a store's own bookkeeping, never copied (the etcd backend's
/// compaction record would tell the new store it had compacted what it never held).
fn internal(key: &[u8]) -> bool {
    key.starts_with(b"/capstan/")
}

/// Read every key at one revision, page by page (online: writes go on meanwhile).
pub async fn take(store: &dyn Store) -> Result<Snapshot> {
    let everything = KeyRange::prefix(Bytes::new());
    let first = store
        .range(RangeRequest::new(everything.clone()).limit(PAGE))
        .await?;
    let revision = first.revision;
    let mut more = first.more;
    let mut kvs: Vec<KeyValue> = first.kvs;
    while more {
        let Some(last) = kvs.last() else { break };
        let page = store
            .range(
                RangeRequest::new(everything.after(&last.key))
                    .at(revision)
                    .limit(PAGE),
            )
            .await?;
        more = page.more;
        kvs.extend(page.kvs);
    }
    kvs.retain(|kv| !internal(&kv.key));
    Ok(Snapshot { revision, kvs })
}

/// FNV-1a over the records, so a damaged or cut file is refused rather than restored.
struct Fnv(u64);

impl Fnv {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn put_bytes(w: &mut impl Write, sum: &mut Fnv, b: &[u8]) -> std::io::Result<()> {
    let len = (b.len() as u64).to_le_bytes();
    sum.feed(&len);
    sum.feed(b);
    w.write_all(&len)?;
    w.write_all(b)
}

fn put_i64(w: &mut impl Write, sum: &mut Fnv, v: i64) -> std::io::Result<()> {
    let b = v.to_le_bytes();
    sum.feed(&b);
    w.write_all(&b)
}

/// Write the snapshot to `path` (through a temporary file, fsynced, then renamed: a
/// crash leaves the old file or the new one, never half of one).
pub fn write(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        let mut sum = Fnv(0xcbf2_9ce4_8422_2325);
        w.write_all(MAGIC)?;
        put_i64(&mut w, &mut sum, snap.revision)?;
        put_i64(&mut w, &mut sum, snap.kvs.len() as i64)?;
        for kv in &snap.kvs {
            put_bytes(&mut w, &mut sum, &kv.key)?;
            put_bytes(&mut w, &mut sum, &kv.value)?;
            put_i64(&mut w, &mut sum, kv.create_revision)?;
            put_i64(&mut w, &mut sum, kv.mod_revision)?;
            put_i64(&mut w, &mut sum, kv.version)?;
        }
        w.write_all(&sum.0.to_le_bytes())?;
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::InvalidRequest(format!("not a usable capstan snapshot: {}", why.into()))
}

fn get_i64(r: &mut impl Read, sum: &mut Fnv) -> Result<i64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)
        .map_err(|e| bad(format!("cut short ({e})")))?;
    sum.feed(&b);
    Ok(i64::from_le_bytes(b))
}

fn get_bytes(r: &mut impl Read, sum: &mut Fnv) -> Result<Bytes> {
    let len = get_i64(r, sum)?;
    // Nothing capstan stores is near this; a larger length is damage, not data.
    if !(0..=(64 << 20)).contains(&len) {
        return Err(bad(format!("a record claims {len} bytes")));
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)
        .map_err(|e| bad(format!("cut short ({e})")))?;
    sum.feed(&b);
    Ok(b.into())
}

pub fn read(path: &Path) -> Result<Snapshot> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::InvalidRequest(format!("{}: {e}", path.display())))?;
    let mut r = BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|_| bad("too short"))?;
    if magic != MAGIC {
        return Err(bad("it does not start with the snapshot header"));
    }
    let mut sum = Fnv(0xcbf2_9ce4_8422_2325);
    let revision = get_i64(&mut r, &mut sum)?;
    let count = get_i64(&mut r, &mut sum)?;
    if count < 0 {
        return Err(bad("negative key count"));
    }
    let mut kvs = Vec::with_capacity((count as usize).min(1 << 20));
    for _ in 0..count {
        kvs.push(KeyValue {
            key: get_bytes(&mut r, &mut sum)?,
            value: get_bytes(&mut r, &mut sum)?,
            create_revision: get_i64(&mut r, &mut sum)?,
            mod_revision: get_i64(&mut r, &mut sum)?,
            version: get_i64(&mut r, &mut sum)?,
        });
    }
    let mut stored = [0u8; 8];
    r.read_exact(&mut stored).map_err(|_| bad("no checksum"))?;
    if u64::from_le_bytes(stored) != sum.0 {
        return Err(bad("checksum mismatch"));
    }
    if let Some(kv) = kvs
        .iter()
        .find(|kv| kv.mod_revision > revision || kv.mod_revision <= 0)
    {
        return Err(bad(format!(
            "key {:?} has revision {} outside 1..={revision}",
            String::from_utf8_lossy(&kv.key),
            kv.mod_revision
        )));
    }
    Ok(Snapshot { revision, kvs })
}

/// Where revisions are spent to line the next write up with its recorded revision.
const FILLER: &[u8] = b"/capstan/restore-filler";
/// Filler writes in flight at once.
const FILLERS_AT_ONCE: usize = 64;

/// Restore into an empty store that nothing else writes to, giving every key its recorded
/// `mod_revision`: the writes of one revision go in one transaction, and the revisions
/// between are spent on a filler key. create_revision and version start afresh (Kubernetes
/// reads neither). Ends by compacting, so no watch can start before the snapshot.
pub async fn restore_into(store: &dyn Store, snap: &Snapshot) -> Result<Revision> {
    let existing = store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::new())).limit(1))
        .await?;
    if existing.kvs.iter().any(|kv| !internal(&kv.key)) {
        return Err(StoreError::InvalidRequest(
            "the target store already holds keys; restore needs an empty one".into(),
        ));
    }
    let mut by_revision: Vec<&KeyValue> = snap.kvs.iter().filter(|kv| !internal(&kv.key)).collect();
    by_revision.sort_by_key(|kv| kv.mod_revision);
    let mut i = 0;
    while i < by_revision.len() {
        let rev = by_revision[i].mod_revision;
        let mut group = Txn::new();
        while i < by_revision.len() && by_revision[i].mod_revision == rev {
            let kv = by_revision[i];
            group = group
                .when(kv.key.clone(), 0)
                .put(kv.key.clone(), kv.value.clone());
            i += 1;
        }
        spend_until(store, rev - 1).await?;
        let got = store.txn(group).await?;
        if !got.succeeded() || got.revision() != rev {
            return Err(StoreError::InvalidRequest(format!(
                "revision {rev} landed at {}: something else writes to the target store",
                got.revision()
            )));
        }
    }
    spend_until(store, snap.revision).await?;
    store
        .txn(Txn::new().delete(Bytes::from_static(FILLER)))
        .await?;
    let end = store.current_revision().await?;
    store.compact(end).await?;
    Ok(end)
}

/// Write the filler key until the store's revision is `target`.
async fn spend_until(store: &dyn Store, target: Revision) -> Result<()> {
    loop {
        let current = store.current_revision().await?;
        if current > target {
            return Err(StoreError::InvalidRequest(format!(
                "the target store is at revision {current}, past {target}: restore needs a \
                 store whose revision is below the snapshot's oldest key (a new one)"
            )));
        }
        let need = (target - current) as usize;
        if need == 0 {
            return Ok(());
        }
        // Exactly `need` writes, some at once: each takes one revision.
        let mut left = need;
        while left > 0 {
            let n = left.min(FILLERS_AT_ONCE);
            let writes = (0..n).map(|_| {
                store.txn(Txn::new().put(Bytes::from_static(FILLER), Bytes::from_static(b"")))
            });
            for r in futures::future::join_all(writes).await {
                r?;
            }
            left -= n;
        }
    }
}
