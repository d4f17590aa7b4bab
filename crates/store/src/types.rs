//! The data model shared by every backend: keys, versions, ranges, transactions, events.
//! It is etcd v3's model, so an etcd backend maps onto it one to one.

use bytes::Bytes;

/// A store revision. Every write advances the one global revision; 0 means "none".
pub type Revision = i64;

/// One stored key with its versioning metadata, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create); 0 on a delete event.
    pub version: i64,
}

/// A half-open key interval `[start, end)`; `end == None` means unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bytes,
    pub end: Option<Bytes>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        let start: Bytes = key.into();
        let mut end = start.to_vec();
        end.push(0);
        KeyRange {
            start,
            end: Some(end.into()),
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start: Bytes = prefix.into();
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    /// Every key in `[start, end)`.
    pub fn between(start: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|e| key < &e[..])
    }

    /// The same range starting strictly after `key` (for paging).
    pub fn after(&self, key: &[u8]) -> Self {
        let mut start = key.to_vec();
        start.push(0);
        KeyRange {
            start: start.into(),
            end: self.end.clone(),
        }
    }
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`);
/// `None` when no such key exists (empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end.into());
        }
    }
    None
}

/// A read over a key range.
#[derive(Debug, Clone)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// Read the range as it was at this revision; `None` reads the latest.
    pub revision: Option<Revision>,
    /// At most this many items; `None` is unlimited.
    pub limit: Option<usize>,
    /// Return keys and metadata but empty values.
    pub keys_only: bool,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            revision: None,
            limit: None,
            keys_only: false,
        }
    }
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Items in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at (the store's current revision for latest reads).
    pub revision: Revision,
    /// Whether more keys remain in the range past the limit.
    pub more: bool,
}

/// A transaction guard: the key's `mod_revision` must equal `mod_revision`
/// (0 means the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub mod_revision: Revision,
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

impl Op {
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Compare-then-write, applied atomically at one new revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }
    pub fn when(mut self, key: impl Into<Bytes>, mod_revision: Revision) -> Self {
        self.compares.push(Compare {
            key: key.into(),
            mod_revision,
        });
        self
    }
    pub fn put(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }
    pub fn delete(mut self, key: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResponse {
    /// Every compare held and every op was applied.
    Succeeded {
        /// The revision of the writes (unchanged if no op changed anything).
        revision: Revision,
        /// For each op, the key's value before it (None if it did not exist).
        prev_kvs: Vec<Option<KeyValue>>,
    },
    /// Some compare failed; nothing was written.
    Failed {
        /// The store's revision when the compare was evaluated.
        revision: Revision,
        /// For each compare, the key's current value (None if it does not exist).
        current: Vec<Option<KeyValue>>,
    },
}

impl TxnResponse {
    pub fn succeeded(&self) -> bool {
        matches!(self, TxnResponse::Succeeded { .. })
    }
    pub fn revision(&self) -> Revision {
        match self {
            TxnResponse::Succeeded { revision, .. } | TxnResponse::Failed { revision, .. } => {
                *revision
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One committed change. For a delete, `kv` holds the key, the deleting revision as
/// `mod_revision`, an empty value and version 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
