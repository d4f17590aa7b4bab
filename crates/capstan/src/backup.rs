//! `capstan backup` and `capstan restore`: a consistent snapshot of the cluster's store at
//! one revision (online), and a new store made from it — SQLite or etcd either way.

use std::path::Path;

use anyhow::Context;
use capstan_store::snapshot::{self, Snapshot};
use capstan_store::{EtcdStore, SqliteConfig, SqliteStore};

use crate::datastore::{self, DatastoreFlags};

async fn connect_etcd(flags: &DatastoreFlags) -> anyhow::Result<std::sync::Arc<EtcdStore>> {
    // No compactor: this process only reads or restores.
    match datastore::open_etcd(flags, None).await? {
        Some(s) => Ok(s),
        None => anyhow::bail!("--datastore {} is not an etcd datastore", flags.datastore),
    }
}

/// Take the snapshot and write it to `file`.
pub async fn backup(file: &Path, data_dir: &Path, flags: &DatastoreFlags) -> anyhow::Result<()> {
    let snap: Snapshot = if flags.datastore == "sqlite" {
        let db = data_dir.join("store.db");
        if !db.exists() {
            anyhow::bail!(
                "{} holds no store (is --data-dir right?)",
                data_dir.display()
            );
        }
        // A read-only connection and one read transaction: the running server is not
        // disturbed and the copy is of one revision.
        let path = db.clone();
        tokio::task::spawn_blocking(move || capstan_store::sqlite::snapshot_file(&path))
            .await?
            .with_context(|| format!("reading {}", db.display()))?
    } else {
        let store = connect_etcd(flags).await?;
        snapshot::take(store.as_ref())
            .await
            .context("reading the etcd datastore")?
    };
    let (revision, keys) = (snap.revision, snap.kvs.len());
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || snapshot::write(&file, &snap))
        .await?
        .context("writing the snapshot")?;
    println!("snapshot of {keys} keys at revision {revision}");
    Ok(())
}

/// Make a new store from the snapshot in `file`: the data dir's SQLite file (which must
/// not exist yet) or an etcd datastore (whose prefix must be empty).
pub async fn restore(file: &Path, data_dir: &Path, flags: &DatastoreFlags) -> anyhow::Result<()> {
    let path = file.to_path_buf();
    let snap = tokio::task::spawn_blocking(move || snapshot::read(&path))
        .await?
        .with_context(|| format!("reading {}", file.display()))?;
    let end = if flags.datastore == "sqlite" {
        // The data dir's lock: no server may run on it meanwhile.
        let dir = crate::data_dir::open(data_dir)?;
        let db = dir.path.join("store.db");
        if db.exists() {
            anyhow::bail!(
                "{} already holds a store; restore into a new data dir",
                dir.path.display()
            );
        }
        let mut config = SqliteConfig::new(&db);
        config.compaction = None;
        let store = SqliteStore::open(config).context("creating the store")?;
        let end = snapshot::restore_into(store.as_ref(), &snap)
            .await
            .context("restoring into SQLite")?;
        store.close();
        end
    } else {
        let store = connect_etcd(flags).await?;
        snapshot::restore_into(store.as_ref(), &snap)
            .await
            .context("restoring into etcd")?
    };
    println!(
        "restored {} keys at their revisions (snapshot revision {}, store now at {end})",
        snap.kvs.len(),
        snap.revision
    );
    Ok(())
}
