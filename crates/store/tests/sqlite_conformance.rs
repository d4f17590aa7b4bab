//! Runs the shared store conformance suite against the SQLite backend.

use capstan_store::conformance::Harness;
use capstan_store::{SqliteConfig, SqliteStore};

async fn sqlite_store() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SqliteConfig::new(dir.path().join("store.db"));
    config.compaction = None;
    let store = SqliteStore::open(config).expect("open store");
    Harness {
        store,
        guard: Box::new(dir),
    }
}

capstan_store::store_conformance_tests!(sqlite_store);

/// The same suite with no in-memory ring of recent events, so every watch replays from
/// the database.
mod replay_from_database {
    use super::*;
    use capstan_store::watch_hub::HubConfig;

    async fn sqlite_store_without_ring() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = SqliteConfig::new(dir.path().join("store.db"));
        config.compaction = None;
        config.hub = HubConfig {
            recent_bytes: 0,
            ..HubConfig::default()
        };
        let store = SqliteStore::open(config).expect("open store");
        Harness {
            store,
            guard: Box::new(dir),
        }
    }

    capstan_store::store_conformance_tests!(sqlite_store_without_ring);
}
