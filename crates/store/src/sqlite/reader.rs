//! Read-side queries: ranges at the latest or a past revision, and history replay for
//! watchers. Each call runs in one read transaction, so it sees one consistent revision.

use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{first_id, read_meta, revision_of};
use crate::error::{Result, StoreError};
use crate::types::{
    EventKind, KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, WatchEvent,
};

/// SQLite wants a concrete upper bound; a key can never sort after this many 0xff bytes
/// in practice, but we use the unbounded query variant instead of guessing.
fn bounds(range: &KeyRange) -> (&[u8], Option<&[u8]>) {
    (&range.start[..], range.end.as_deref())
}

fn sql_limit(limit: Option<usize>) -> i64 {
    match limit {
        // One extra row tells whether more remain; a limit beyond i64 is no limit.
        Some(n) => i64::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(1))
            .unwrap_or(-1),
        None => -1,
    }
}

pub fn range(conn: &mut Connection, req: &RangeRequest) -> Result<RangeResponse> {
    let tx = conn.transaction()?;
    let current = read_meta(&tx, "revision")?;
    let compacted = read_meta(&tx, "compacted")?;
    let at = match req.revision {
        None => current,
        Some(r) if r <= 0 => current,
        Some(r) if r > current => {
            return Err(StoreError::FutureRevision {
                requested: r,
                current,
            });
        }
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                oldest_available: compacted,
            });
        }
        Some(r) => r,
    };
    let (start, end) = bounds(&req.range);
    let mut kvs = Vec::new();
    let mut more = false;
    let limit = req.limit.unwrap_or(usize::MAX);
    if at == current {
        let sql = if end.is_some() {
            "SELECT c.key, h.value, h.create_rev, h.id, h.version FROM current c \
             JOIN history h ON h.id = c.id WHERE c.key >= ?1 AND c.key < ?2 AND h.value IS NOT NULL \
             ORDER BY c.key LIMIT ?3"
        } else {
            "SELECT c.key, h.value, h.create_rev, h.id, h.version FROM current c \
             JOIN history h ON h.id = c.id WHERE c.key >= ?1 AND ?2 IS NULL AND h.value IS NOT NULL \
             ORDER BY c.key LIMIT ?3"
        };
        let mut stmt = tx.prepare_cached(sql)?;
        let mut rows = stmt.query(params![start, end, sql_limit(req.limit)])?;
        // Keys and values are copied into one arena and handed out as slices of it: one
        // allocation per range instead of two per row.
        let mut arena = bytes::BytesMut::new();
        let mut spans = Vec::new();
        while let Some(row) = rows.next()? {
            if spans.len() == limit {
                more = true;
                break;
            }
            let key = row.get_ref(0)?.as_blob()?;
            let key_at = arena.len();
            arena.extend_from_slice(key);
            let value_at = arena.len();
            if !req.keys_only {
                if let Some(v) = row.get_ref(1)?.as_blob_or_null()? {
                    arena.extend_from_slice(v);
                }
            }
            let id: i64 = row.get(3)?;
            spans.push((
                key_at,
                value_at,
                arena.len(),
                row.get::<_, i64>(2)?,
                id,
                row.get::<_, i64>(4)?,
            ));
        }
        let arena = arena.freeze();
        kvs = spans
            .into_iter()
            .map(|(k, v, e, create_revision, id, version)| KeyValue {
                key: arena.slice(k..v),
                value: arena.slice(v..e),
                create_revision,
                mod_revision: revision_of(id),
                version,
            })
            .collect();
    } else {
        // At a past revision: walk each key's version chain back to the newest version
        // at or before `at`. Keys deleted since are still in `current` as tombstones.
        let bound = first_id(at + 1);
        let sql = if end.is_some() {
            "SELECT c.key, h.value, h.create_rev, h.id, h.version, h.prev_id FROM current c \
             JOIN history h ON h.id = c.id WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key"
        } else {
            "SELECT c.key, h.value, h.create_rev, h.id, h.version, h.prev_id FROM current c \
             JOIN history h ON h.id = c.id WHERE c.key >= ?1 AND ?2 IS NULL ORDER BY c.key"
        };
        let mut stmt = tx.prepare_cached(sql)?;
        let mut walk = tx.prepare_cached(
            "SELECT value, create_rev, version, prev_id FROM history WHERE id = ?1",
        )?;
        let mut rows = stmt.query(params![start, end])?;
        while let Some(row) = rows.next()? {
            let mut id: i64 = row.get(3)?;
            let mut value: Option<Vec<u8>> = row.get(1)?;
            let mut create_rev: i64 = row.get(2)?;
            let mut version: i64 = row.get(4)?;
            let mut prev: Option<i64> = row.get(5)?;
            let mut visible = true;
            while id >= bound {
                let Some(p) = prev else {
                    visible = false;
                    break;
                };
                let found = walk
                    .query_row([p], |r| {
                        Ok((
                            r.get::<_, Option<Vec<u8>>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    })
                    .optional()?;
                let Some((v, c, ver, pp)) = found else {
                    visible = false;
                    break;
                };
                (id, value, create_rev, version, prev) = (p, v, c, ver, pp);
            }
            let Some(value) = value.filter(|_| visible) else {
                continue;
            };
            if kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(KeyValue {
                key: row.get::<_, Vec<u8>>(0)?.into(),
                value: if req.keys_only {
                    Bytes::new()
                } else {
                    value.into()
                },
                create_revision: create_rev,
                mod_revision: revision_of(id),
                version,
            });
        }
    }
    Ok(RangeResponse {
        kvs,
        revision: at,
        more,
    })
}

/// Events in `range` with `from <= revision <= to`, in revision order, at most `limit`.
/// Fails with `Compacted` if history before `from` is no longer complete.
pub fn replay(
    conn: &mut Connection,
    range: &KeyRange,
    from: Revision,
    to: Revision,
    limit: usize,
) -> Result<Vec<Arc<WatchEvent>>> {
    let tx = conn.transaction()?;
    let compacted = read_meta(&tx, "compacted")?;
    if from <= compacted {
        return Err(StoreError::Compacted {
            requested: from,
            oldest_available: compacted + 1,
        });
    }
    let (start, end) = bounds(range);
    let sql = if end.is_some() {
        "SELECT h.key, h.value, h.create_rev, h.id, h.version, p.value, p.create_rev, p.id, p.version \
         FROM history h LEFT JOIN history p ON p.id = h.prev_id \
         WHERE h.id >= ?1 AND h.id < ?2 AND h.key >= ?3 AND h.key < ?4 ORDER BY h.id LIMIT ?5"
    } else {
        "SELECT h.key, h.value, h.create_rev, h.id, h.version, p.value, p.create_rev, p.id, p.version \
         FROM history h LEFT JOIN history p ON p.id = h.prev_id \
         WHERE h.id >= ?1 AND h.id < ?2 AND h.key >= ?3 AND ?4 IS NULL ORDER BY h.id LIMIT ?5"
    };
    let mut stmt = tx.prepare_cached(sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![first_id(from), first_id(to + 1), start, end, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let key: Bytes = row.get::<_, Vec<u8>>(0)?.into();
        let value: Option<Vec<u8>> = row.get(1)?;
        let id: i64 = row.get(3)?;
        let prev_id: Option<i64> = row.get(7)?;
        // The previous row may be a tombstone (a re-create): then there is no previous value.
        let prev_value: Option<Vec<u8>> = row.get(5)?;
        let prev_kv = match (prev_id, prev_value) {
            (Some(pid), Some(prev_value)) => Some(KeyValue {
                key: key.clone(),
                value: prev_value.into(),
                create_revision: row.get(6)?,
                mod_revision: revision_of(pid),
                version: row.get(8)?,
            }),
            _ => None,
        };
        let kind = if value.is_some() {
            EventKind::Put
        } else {
            EventKind::Delete
        };
        out.push(Arc::new(WatchEvent {
            kind,
            kv: KeyValue {
                key,
                value: value.map(Bytes::from).unwrap_or_default(),
                create_revision: if kind == EventKind::Put {
                    row.get(2)?
                } else {
                    0
                },
                mod_revision: revision_of(id),
                version: row.get(4)?,
            },
            prev_kv,
        }));
    }
    Ok(out)
}

pub fn meta(conn: &Connection, name: &str) -> Result<i64> {
    Ok(read_meta(conn, name)?)
}
