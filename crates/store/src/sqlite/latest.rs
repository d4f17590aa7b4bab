//! The newest version of every live key, held in memory and advanced by the writer after
//! each commit, so reads at the current revision (most of them) never touch SQLite.
//!
//! Values are held LZ4-compressed: this map holds every object the cluster stores for as long
//! as it exists (30,000 pods were ~195 MB of JSON, the largest part of the server's heap), and
//! objects' JSON — repeated field names, managedFields — shrinks several times. Compressing
//! costs a few microseconds per write; a read decompresses only what it returns, after the
//! lock is released.
//!
//! Each value is compressed against a dictionary: a recent value of the same kind of object
//! (keys sharing their first three segments, `/registry/pods/`). Objects of one kind repeat
//! each other's field names, managedFields, defaults and labels, which a lone object cannot
//! exploit: a running pod of the scheduling bench is 3.4 KB of JSON, 1.8 KB compressed alone
//! and 0.33 KB against another pod (an Event 1.2 → 0.73 → 0.19 KB).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::types::{EventKind, KeyValue, RangeRequest, RangeResponse, Revision, WatchEvent};

/// Values shorter than this are held as they are: compressing saves nothing worth the work.
const COMPRESS_FROM: usize = 256;

/// A value larger than this is not made a dictionary: LZ4 looks back at most 64 KB, and a
/// dictionary is held for as long as any value compressed against it lives.
const DICT_MAX: usize = 8 * 1024;

/// A kind's dictionary is replaced by its newest value after this many values were packed
/// against it, so it follows what objects of the kind look like now (a pod created, bound,
/// then running). Retired dictionaries live on, shared, with the values packed against them.
const DICT_REFRESH: u32 = 1024;

pub struct Latest {
    state: RwLock<State>,
    /// Only the writer packs (and `new`, before it starts): never contended.
    dicts: Mutex<Dicts>,
}

struct State {
    revision: Revision,
    kvs: BTreeMap<Bytes, Held>,
}

/// How a held value is stored.
#[derive(Clone)]
enum Packing {
    Raw,
    /// An LZ4 block, its length first, compressed against this dictionary.
    Lz4(Arc<[u8]>),
}

/// A key's newest version as held: `kv.value` is as `packing` says.
#[derive(Clone)]
struct Held {
    kv: KeyValue,
    packing: Packing,
}

/// The dictionary of each kind of key, with how many values it has packed.
#[derive(Default)]
struct Dicts {
    kinds: HashMap<Vec<u8>, (Arc<[u8]>, u32)>,
}

/// The kind of a key: its first three segments (`/registry/pods/`, `/registry/apps/`). A
/// grouped kind shares its group's dictionary, which costs only compression. Keys of fewer
/// segments (not the API server's) share one kind, so their number bounds nothing here.
fn kind_of(key: &[u8]) -> &[u8] {
    let mut slashes = 0;
    for (i, b) in key.iter().enumerate() {
        if *b == b'/' {
            slashes += 1;
            if slashes == 3 {
                return &key[..=i];
            }
        }
    }
    &[]
}

impl Dicts {
    /// The dictionary to pack `value` (under `key`) against, after letting `value` become
    /// the kind's dictionary if the kind has none or its own is due for a refresh.
    fn for_value(&mut self, key: &[u8], value: &Bytes) -> Arc<[u8]> {
        let candidate = value.len() <= DICT_MAX;
        let kind = kind_of(key);
        match self.kinds.get_mut(kind) {
            Some((dict, used)) => {
                *used += 1;
                if *used >= DICT_REFRESH && candidate {
                    // The dictionary for the next values; this one is packed against the
                    // old one (a value against itself would hold nothing).
                    let old = std::mem::replace(dict, Arc::from(&value[..]));
                    *used = 0;
                    return old;
                }
                dict.clone()
            }
            None => {
                let dict: Arc<[u8]> = if candidate {
                    Arc::from(&value[..])
                } else {
                    Arc::from(&[][..])
                };
                // An empty dictionary (a first value too large) is replaced by the next
                // candidate at once.
                let used = if candidate { 0 } else { DICT_REFRESH };
                self.kinds.insert(kind.to_vec(), (dict.clone(), used));
                if candidate {
                    // The first value of a kind has nothing to be packed against.
                    Arc::from(&[][..])
                } else {
                    dict
                }
            }
        }
    }
}

impl Held {
    fn pack(kv: &KeyValue, dicts: &mut Dicts) -> Held {
        let mut kv = kv.clone();
        if kv.value.len() < COMPRESS_FROM {
            return Held {
                kv,
                packing: Packing::Raw,
            };
        }
        let dict = dicts.for_value(&kv.key, &kv.value);
        let mut packed = lz4_flex::block::compress_prepend_size_with_dict(&kv.value, &dict);
        if packed.len() >= kv.value.len() {
            return Held {
                kv,
                packing: Packing::Raw,
            };
        }
        // The encoder sizes its buffer for the worst case: held for the key's lifetime, it
        // must not keep that slack.
        packed.shrink_to_fit();
        kv.value = Bytes::from(packed);
        Held {
            kv,
            packing: Packing::Lz4(dict),
        }
    }

    /// `None` if a block does not read back (only this module writes them, so never in
    /// practice): the caller then reads the database instead.
    fn unpack(self) -> Option<KeyValue> {
        let Held { mut kv, packing } = self;
        if let Packing::Lz4(dict) = packing {
            match lz4_flex::block::decompress_size_prepended_with_dict(&kv.value, &dict) {
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
        let mut dicts = Dicts::default();
        let kvs = kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), Held::pack(&kv, &mut dicts)))
            .collect();
        Latest {
            state: RwLock::new(State { revision, kvs }),
            dicts: Mutex::new(dicts),
        }
    }

    /// Apply a committed batch; must be called before its writes are acknowledged, so an
    /// acknowledged write is visible to every later read. Values are compressed before the
    /// lock is taken.
    pub fn apply(&self, revision: Revision, events: &[Arc<WatchEvent>]) {
        let held: Vec<Option<Held>> = {
            let mut dicts = self.dicts.lock().unwrap_or_else(|p| p.into_inner());
            events
                .iter()
                .map(|ev| match ev.kind {
                    EventKind::Put => Some(Held::pack(&ev.kv, &mut dicts)),
                    EventKind::Delete => None,
                })
                .collect()
        };
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
                    h.packing = Packing::Raw;
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
            assert!(
                matches!(a.packing, Packing::Lz4(_)) && a.kv.value.len() < big.len(),
                "held as written"
            );
            assert!(matches!(state.kvs[&b"/b"[..]].packing, Packing::Raw));
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

    #[test]
    fn values_of_a_kind_are_packed_against_each_other_and_read_back_across_refreshes() {
        let value = |i: usize| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i:05}","namespace":"ns","uid":"{i:08x}-0000-4000-8000-{i:012x}","labels":{{"app":"web","tier":"front"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}],"nodeName":"node-{n}","restartPolicy":"Always","schedulerName":"default-scheduler"}},"status":{{"phase":"Running","podIP":"10.0.{a}.{b}"}}}}"#,
                n = i % 97,
                a = i / 250,
                b = i % 250
            )
            .into_bytes()
        };
        let n = DICT_REFRESH as usize * 2 + 100;
        let latest = Latest::new(1, Vec::new());
        let events: Vec<_> = (0..n)
            .map(|i| {
                Arc::new(WatchEvent {
                    kind: EventKind::Put,
                    kv: kv(&format!("/registry/pods/ns/pod-{i:05}"), value(i), 2),
                    prev_kv: None,
                })
            })
            .collect();
        latest.apply(2, &events);
        let (held, alone): (usize, usize) = {
            let state = latest.state.read().unwrap();
            let dicts: std::collections::HashSet<_> = state
                .kvs
                .values()
                .filter_map(|h| match &h.packing {
                    Packing::Lz4(d) => Some(Arc::as_ptr(d) as *const u8 as usize),
                    Packing::Raw => None,
                })
                .collect();
            // The first value's own (empty) dictionary, the first value's, and refreshes.
            assert_eq!(dicts.len(), 4, "dictionaries in use");
            (
                state.kvs.values().map(|h| h.kv.value.len()).sum(),
                (0..n)
                    .map(|i| lz4_flex::compress_prepend_size(&value(i)).len())
                    .sum(),
            )
        };
        assert!(
            held * 2 < alone,
            "against a dictionary {held} B, alone {alone} B"
        );
        let got = latest
            .range(&RangeRequest {
                range: KeyRange {
                    start: Bytes::from_static(b"/registry/pods/"),
                    end: Some(Bytes::from_static(b"/registry/pods0")),
                },
                revision: None,
                limit: None,
                keys_only: false,
            })
            .unwrap();
        assert_eq!(got.kvs.len(), n);
        for (i, kv) in got.kvs.iter().enumerate() {
            assert_eq!(&kv.value[..], &value(i)[..], "value {i}");
        }
    }

    #[test]
    fn a_kind_is_its_first_three_segments() {
        assert_eq!(kind_of(b"/registry/pods/ns/p"), b"/registry/pods/");
        assert_eq!(
            kind_of(b"/registry/apps/deployments/ns/d"),
            b"/registry/apps/"
        );
        assert_eq!(kind_of(b"/registry/nodes"), b"");
        assert_eq!(kind_of(b"a"), b"");
        assert_eq!(kind_of(b""), b"");
    }
}
