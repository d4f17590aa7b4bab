//! The newest version of every live key, held in memory and advanced by the writer after
//! each commit, so reads at the current revision (most of them) never touch SQLite.
//!
//! Values are held LZ4-compressed: this map holds every object the cluster stores for as long
//! as it exists (30,000 pods were ~195 MB of JSON, the largest part of the server's heap), and
//! objects' JSON — repeated field names, managedFields — shrinks several times. Compressing
//! costs a few microseconds per write; a read decompresses only what it returns, after the
//! lock is released.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::types::{EventKind, KeyValue, RangeRequest, RangeResponse, Revision, WatchEvent};

/// Values shorter than this are held as they are: compressing saves nothing worth the work.
const COMPRESS_FROM: usize = 256;

pub struct Latest {
    state: RwLock<State>,
}

struct State {
    revision: Revision,
    kvs: BTreeMap<Bytes, Held>,
}

/// A key's newest version as held: `kv.value` is `packed` (LZ4 block, its length first) or
/// the value itself.
#[derive(Clone)]
struct Held {
    kv: KeyValue,
    packed: bool,
}

impl Held {
    fn pack(kv: &KeyValue) -> Held {
        let mut kv = kv.clone();
        if kv.value.len() < COMPRESS_FROM {
            return Held { kv, packed: false };
        }
        let mut packed = lz4_flex::compress_prepend_size(&kv.value);
        if packed.len() >= kv.value.len() {
            return Held { kv, packed: false };
        }
        // The encoder sizes its buffer for the worst case: held for the key's lifetime, it
        // must not keep that slack.
        packed.shrink_to_fit();
        kv.value = Bytes::from(packed);
        Held { kv, packed: true }
    }

    /// `None` if a block does not read back (only this module writes them, so never in
    /// practice): the caller then reads the database instead.
    fn unpack(self) -> Option<KeyValue> {
        let Held { mut kv, packed } = self;
        if packed {
            match lz4_flex::decompress_size_prepended(&kv.value) {
                Ok(v) => kv.value = Bytes::from(v),
                Err(e) => {
                    tracing::error!(error = %e, "latest-value cache: a held value does not decompress; reading the database");
                    return None;
                }
            }
        }
        Some(kv)
    }
}

impl Latest {
    /// Start from the live keys as read from the database at `revision`.
    pub fn new(revision: Revision, kvs: Vec<KeyValue>) -> Self {
        let kvs = kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), Held::pack(&kv)))
            .collect();
        Latest {
            state: RwLock::new(State { revision, kvs }),
        }
    }

    /// Apply a committed batch; must be called before its writes are acknowledged, so an
    /// acknowledged write is visible to every later read. Values are compressed before the
    /// lock is taken.
    pub fn apply(&self, revision: Revision, events: &[Arc<WatchEvent>]) {
        let held: Vec<Option<Held>> = events
            .iter()
            .map(|ev| match ev.kind {
                EventKind::Put => Some(Held::pack(&ev.kv)),
                EventKind::Delete => None,
            })
            .collect();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for (ev, held) in events.iter().zip(held) {
            match held {
                Some(h) => {
                    state.kvs.insert(ev.kv.key.clone(), h);
                }
                None => {
                    state.kvs.remove(&ev.kv.key[..]);
                }
            }
        }
        state.revision = revision;
    }

    /// Answer `req` if it reads the current revision; `None` sends it to the database
    /// (past revisions, or a revision this view has not reached yet).
    pub fn range(&self, req: &RangeRequest) -> Option<RangeResponse> {
        let (held, revision, more) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            match req.revision {
                None => {}
                Some(r) if r <= 0 || r == state.revision => {}
                Some(_) => return None,
            }
            let end = match &req.range.end {
                Some(e) => Bound::Excluded(&e[..]),
                None => Bound::Unbounded,
            };
            let start = Bound::Included(&req.range.start[..]);
            if matches!(end, Bound::Excluded(e) if e <= &req.range.start[..]) {
                return Some(RangeResponse {
                    kvs: Vec::new(),
                    revision: state.revision,
                    more: false,
                });
            }
            let limit = req.limit.unwrap_or(usize::MAX);
            let mut iter = state.kvs.range::<[u8], _>((start, end));
            let mut held = Vec::new();
            for (_, h) in iter.by_ref().take(limit) {
                let mut h = h.clone();
                if req.keys_only {
                    h.kv.value = Bytes::new();
                    h.packed = false;
                }
                held.push(h);
            }
            (held, state.revision, iter.next().is_some())
        };
        Some(RangeResponse {
            kvs: held.into_iter().map(Held::unpack).collect::<Option<_>>()?,
            revision,
            more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::KeyRange;

    fn kv(key: &str, value: Vec<u8>, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        }
    }

    #[test]
    fn values_come_back_as_written_and_are_held_smaller() {
        // An object's JSON: repeated field names, as in every stored object.
        let big = br#"{"metadata":{"name":"p","labels":{"app":"web"},"managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{"f:containers":{}}}},{"manager":"kubelet","fieldsV1":{"f:status":{"f:conditions":{}}}}]},"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"},{"type":"Initialized","status":"True"},{"type":"PodScheduled","status":"True"}]}}"#.to_vec();
        let small = b"{}".to_vec();
        let latest = Latest::new(
            1,
            vec![kv("/a", big.clone(), 1), kv("/b", small.clone(), 1)],
        );
        {
            let state = latest.state.read().unwrap();
            let a = &state.kvs[&b"/a"[..]];
            assert!(a.packed && a.kv.value.len() < big.len(), "held as written");
            assert!(!state.kvs[&b"/b"[..]].packed);
        }
        let all = |keys_only| {
            latest
                .range(&RangeRequest {
                    range: KeyRange {
                        start: Bytes::from_static(b"/"),
                        end: Some(Bytes::from_static(b"0")),
                    },
                    revision: None,
                    limit: None,
                    keys_only,
                })
                .unwrap()
        };
        let got = all(false);
        assert_eq!(got.kvs.len(), 2);
        assert_eq!(&got.kvs[0].value[..], &big[..]);
        assert_eq!(&got.kvs[1].value[..], &small[..]);
        assert!(all(true).kvs.iter().all(|kv| kv.value.is_empty()));

        // A later write replaces the held value, a delete removes it.
        let mut next = big.clone();
        next.extend_from_slice(b"   ");
        latest.apply(
            2,
            &[
                Arc::new(WatchEvent {
                    kind: EventKind::Put,
                    kv: kv("/a", next.clone(), 2),
                    prev_kv: None,
                }),
                Arc::new(WatchEvent {
                    kind: EventKind::Delete,
                    kv: kv("/b", Vec::new(), 2),
                    prev_kv: None,
                }),
            ],
        );
        let got = all(false);
        assert_eq!(got.revision, 2);
        assert_eq!(got.kvs.len(), 1);
        assert_eq!(&got.kvs[0].value[..], &next[..]);
    }
}
