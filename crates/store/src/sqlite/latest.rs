//! The newest version of every live key, held in memory and advanced by the writer after
//! each commit, so reads at the current revision (most of them) never touch SQLite.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::types::{EventKind, KeyValue, RangeRequest, RangeResponse, Revision, WatchEvent};

pub struct Latest {
    state: RwLock<State>,
}

struct State {
    revision: Revision,
    kvs: BTreeMap<Bytes, KeyValue>,
}

impl Latest {
    /// Start from the live keys as read from the database at `revision`.
    pub fn new(revision: Revision, kvs: Vec<KeyValue>) -> Self {
        let kvs = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        Latest {
            state: RwLock::new(State { revision, kvs }),
        }
    }

    /// Apply a committed batch; must be called before its writes are acknowledged, so an
    /// acknowledged write is visible to every later read.
    pub fn apply(&self, revision: Revision, events: &[Arc<WatchEvent>]) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            match ev.kind {
                EventKind::Put => {
                    state.kvs.insert(ev.kv.key.clone(), ev.kv.clone());
                }
                EventKind::Delete => {
                    state.kvs.remove(&ev.kv.key[..]);
                }
            }
        }
        state.revision = revision;
    }

    /// Answer `req` if it reads the current revision; `None` sends it to the database
    /// (past revisions, or a revision this view has not reached yet).
    pub fn range(&self, req: &RangeRequest) -> Option<RangeResponse> {
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
        let mut kvs = Vec::new();
        for (_, kv) in iter.by_ref().take(limit) {
            let mut kv = kv.clone();
            if req.keys_only {
                kv.value = Bytes::new();
            }
            kvs.push(kv);
        }
        let more = iter.next().is_some();
        Some(RangeResponse {
            kvs,
            revision: state.revision,
            more,
        })
    }
}
