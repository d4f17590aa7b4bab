//! The shared store conformance suite against the etcd backend: one 3-member Debian etcd
//! cluster on loopback for the whole file, each case under its own key prefix. The cases
//! run one at a time, since several assert on the cluster-wide revision.

use std::sync::{Arc, OnceLock};

use capstan_store::conformance::Harness;
use capstan_store::etcd::testing::EtcdCluster;
use capstan_store::{EtcdConfig, EtcdStore};

fn cluster() -> &'static EtcdCluster {
    static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| EtcdCluster::start(3).expect("start a 3-member etcd cluster"))
}

fn one_at_a_time() -> Arc<tokio::sync::Mutex<()>> {
    static LOCK: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(Default::default).clone()
}

async fn etcd_store() -> Harness {
    let turn = one_at_a_time().lock_owned().await;
    let endpoints = cluster().endpoints();
    let mut config = EtcdConfig::new(endpoints);
    config.compaction = None;
    config.prefix = format!("/conformance-{}/", uuid_ish()).into();
    let store = EtcdStore::connect(config).await.expect("connect to etcd");
    Harness {
        store,
        guard: Box::new(turn),
    }
}

fn uuid_ish() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

capstan_store::store_conformance_tests!(etcd_store);
