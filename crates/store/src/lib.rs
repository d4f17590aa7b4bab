//! capstan's storage layer: an etcd-shaped key-value store (ordered keys, one global
//! revision, compare-and-swap transactions, watch from a revision, compaction).
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, durable, group commit) and
//! [`etcd::EtcdStore`] (etcd v3, for several servers). Every backend is held to the same
//! [`conformance`] suite.

pub mod compactor;
pub mod conformance;
pub mod error;
pub mod etcd;
pub mod snapshot;
pub mod sqlite;
pub mod store;
pub mod types;
pub mod watch_hub;

pub use compactor::CompactionConfig;
pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use sqlite::{SqliteConfig, SqliteStore};
pub use store::{Store, StoreExt, WatchProgress, WatchStream};
pub use types::*;
