//! `--datastore`: where `capstan server` keeps the cluster — the embedded SQLite file in the
//! data dir (default) or an etcd cluster shared by several servers — and how it is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use capstan_store::{
    CompactionConfig, EtcdConfig, EtcdStore, EtcdTls, SqliteConfig, SqliteStore, Store,
};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DatastoreFlags {
    /// Where the cluster's data lives: `sqlite` (the data dir's store.db, the default) or
    /// `etcd://host:port[,host:port…]` (etcd 3.4+; several servers may share it).
    #[arg(long, default_value = "sqlite")]
    pub datastore: String,
    /// Prefix of every key this cluster writes to etcd, so clusters can share one etcd.
    #[arg(long, default_value = "")]
    pub datastore_prefix: String,
    /// CA bundle that etcd's serving certificate chains to (enables TLS to etcd).
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (PEM), with --datastore-keyfile.
    #[arg(long, requires = "datastore_keyfile")]
    pub datastore_certfile: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "datastore_certfile")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Seconds an etcd request may take before it fails with 503 (never a hang).
    #[arg(long, default_value_t = 10)]
    pub datastore_timeout_seconds: u64,
}

/// The open store, kept by its concrete type so shutdown can close it properly.
pub enum Datastore {
    Sqlite(Arc<SqliteStore>),
    Etcd(Arc<EtcdStore>),
}

impl Datastore {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Datastore::Sqlite(s) => s.clone(),
            Datastore::Etcd(s) => s.clone(),
        }
    }

    /// Finish queued writes (SQLite: acknowledged ones are durable before this returns).
    pub fn close(&self) {
        match self {
            Datastore::Sqlite(s) => s.close(),
            Datastore::Etcd(s) => s.close(),
        }
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

pub async fn open(
    flags: &DatastoreFlags,
    data_dir: &Path,
    compaction: CompactionConfig,
) -> anyhow::Result<Datastore> {
    if let Some(etcd) = open_etcd(flags, Some(compaction.clone())).await? {
        return Ok(Datastore::Etcd(etcd));
    }
    let mut config = SqliteConfig::new(data_dir.join("store.db"));
    config.compaction = Some(compaction);
    let store = SqliteStore::open(config).context("opening the store")?;
    Ok(Datastore::Sqlite(store))
}

/// Connect to the etcd datastore the flags name (`None` for `sqlite`), checking the flags.
pub async fn open_etcd(
    flags: &DatastoreFlags,
    compaction: Option<CompactionConfig>,
) -> anyhow::Result<Option<Arc<EtcdStore>>> {
    if flags.datastore == "sqlite" {
        if !flags.datastore_prefix.is_empty() || flags.datastore_cafile.is_some() {
            anyhow::bail!("--datastore-prefix and --datastore-cafile apply to an etcd datastore");
        }
        return Ok(None);
    }
    let endpoints = EtcdConfig::parse_endpoints(&flags.datastore).map_err(anyhow::Error::msg)?;
    let mut config = EtcdConfig::new(endpoints);
    config.prefix = Bytes::from(flags.datastore_prefix.clone().into_bytes());
    config.compaction = compaction;
    config.request_timeout = std::time::Duration::from_secs(flags.datastore_timeout_seconds.max(1));
    if let Some(ca) = &flags.datastore_cafile {
        config.tls = Some(EtcdTls {
            ca_pem: read(ca, "etcd CA")?,
            cert_pem: flags
                .datastore_certfile
                .as_deref()
                .map(|p| read(p, "etcd client certificate"))
                .transpose()?,
            key_pem: flags
                .datastore_keyfile
                .as_deref()
                .map(|p| read(p, "etcd client key"))
                .transpose()?,
        });
    } else if flags.datastore_certfile.is_some() {
        anyhow::bail!(
            "--datastore-certfile needs --datastore-cafile (the CA etcd's certificate chains to)"
        );
    }
    let store = EtcdStore::connect(config)
        .await
        .with_context(|| format!("opening the datastore {}", flags.datastore))?;
    Ok(Some(store))
}
