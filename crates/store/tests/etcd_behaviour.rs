//! What only the etcd backend has to survive: a member killed under a watch, the leader
//! killed mid-watch, a cluster that lost its quorum (an error within the deadline, never a
//! hang), compaction by another server, and clusters sharing one etcd under prefixes.
//! Each case starts its own 3-member Debian etcd cluster on loopback.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::etcd::testing::EtcdCluster;
use capstan_store::{
    EtcdConfig, EtcdStore, KeyRange, RangeRequest, Store, StoreError, StoreExt, WatchStream,
};
use futures::StreamExt;

async fn connect(cluster: &EtcdCluster, prefix: &str, timeout: Duration) -> Arc<EtcdStore> {
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction = None;
    config.prefix = Bytes::copy_from_slice(prefix.as_bytes());
    config.request_timeout = timeout;
    EtcdStore::connect(config).await.expect("connect to etcd")
}

async fn next(w: &mut WatchStream) -> capstan_store::Result<Arc<capstan_store::WatchEvent>> {
    match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 30 s"),
    }
}

/// Which member leads, by asking each running member for its status.
async fn leader(cluster: &EtcdCluster) -> usize {
    for _ in 0..100 {
        for (i, ep) in cluster.endpoints().iter().enumerate() {
            if !cluster.is_running(i) {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([ep], None).await else {
                continue;
            };
            if let Ok(s) = c.status().await {
                if s.header().map(|h| h.member_id()) == Some(s.leader()) {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no member reports itself the leader");
}

/// Write `n` keys from a task, one after another, recording each acknowledged revision
/// (writes that fail while the cluster elects are retried, so every key lands once).
fn writer(store: Arc<EtcdStore>, n: usize) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..n {
            let key = format!("w/{i:05}");
            loop {
                match store.create(key.as_bytes(), Bytes::from("v")).await {
                    Ok(rev) => {
                        acked.push(rev);
                        break;
                    }
                    // An ambiguous failure may have applied: the key is then there.
                    Err(StoreError::Unavailable(_)) => match store.get(key.as_bytes()).await {
                        Ok(Some(kv)) => {
                            acked.push(kv.mod_revision);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                    Err(StoreError::CompareFailed) => {
                        let kv = store.get(key.as_bytes()).await.unwrap().unwrap();
                        acked.push(kv.mod_revision);
                        break;
                    }
                    Err(e) => panic!("write {key} failed: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked
    })
}

/// The watcher must see exactly the acknowledged revisions, in order, once each.
async fn assert_watch_saw(w: &mut WatchStream, acked: &[i64]) {
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let e = next(w).await.expect("the watch survives");
        seen.push(e.revision());
    }
    assert_eq!(seen, acked, "every acknowledged write, in order, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_writes_survive_a_killed_leader() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let store = connect(&cluster, "/leader/", Duration::from_secs(5)).await;
    let from = store.current_revision().await.unwrap();
    let mut w = store
        .watch(KeyRange::prefix(&b"w/"[..]), from + 1)
        .await
        .unwrap();
    let writes = writer(store.clone(), 300);
    // Let the writes get going, then take the leader away mid-stream.
    while store.current_revision().await.unwrap() < from + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = leader(&cluster).await;
    cluster.kill(old);
    let acked = writes.await.unwrap();
    let new = leader(&cluster).await;
    assert_ne!(new, old, "a new leader was elected");
    assert_watch_saw(&mut w, &acked).await;
    let r = store
        .range(RangeRequest::new(KeyRange::prefix(&b"w/"[..])))
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 300, "no acknowledged write lost");
    // The old leader rejoins and catches up.
    cluster.restart(old).unwrap();
    let rev = store.put(b"after", Bytes::from("x")).await.unwrap();
    assert!(rev > *acked.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_fails_requests_in_time_and_recovers() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let store = connect(&cluster, "/quorum/", Duration::from_secs(2)).await;
    let r1 = store.put(b"k", Bytes::from("1")).await.unwrap();
    let mut w = store
        .watch(KeyRange::prefix(&b"k"[..]), r1 + 1)
        .await
        .unwrap();
    // One member down: a follower, then everything still works.
    let lead = leader(&cluster).await;
    let follower = (lead + 1) % 3;
    cluster.kill(follower);
    // A request already on the killed member's connection fails as Unavailable (it may
    // or may not have been applied, so it is not sent again); the next ones go elsewhere.
    let mut r2 = None;
    for _ in 0..20 {
        match store.put(b"k", Bytes::from("2")).await {
            Ok(rev) => {
                r2 = Some(rev);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("a write with one member down: {e:?}"),
        }
    }
    let r2 = r2.expect("writes work again with one member down");
    // (A refused attempt that did reach the leader shows up before it.)
    let mut seen = next(&mut w).await.unwrap().revision();
    while seen < r2 {
        seen = next(&mut w).await.unwrap().revision();
    }
    assert_eq!(seen, r2);
    // Two down: no quorum. A write and a read answer within the deadline, as Unavailable.
    cluster.kill((follower + 1) % 3);
    let started = std::time::Instant::now();
    let write = store.put(b"k", Bytes::from("3")).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "a write without quorum: {write:?}"
    );
    let read = store.get(b"k").await;
    assert!(
        matches!(read, Err(StoreError::Unavailable(_))),
        "a linearizable read without quorum: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // Members back: the same store and the same watch carry on.
    for i in 0..3 {
        if !cluster.is_running(i) {
            cluster.restart(i).unwrap();
        }
    }
    let mut r4 = None;
    for _ in 0..100 {
        match store.put(b"k", Bytes::from("4")).await {
            Ok(r) => {
                r4 = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let r4 = r4.expect("writes work again once the quorum is back");
    // The write that failed may or may not have been applied; the watch shows what was.
    let mut e = next(&mut w).await.unwrap();
    if e.kv.value == "3" {
        e = next(&mut w).await.unwrap();
    }
    assert_eq!((e.revision(), e.kv.value.clone()), (r4, Bytes::from("4")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_another_server_and_prefixes_that_share_etcd() {
    let cluster = EtcdCluster::start(3).unwrap();
    let a = connect(&cluster, "/cluster-a/", Duration::from_secs(5)).await;
    let a2 = connect(&cluster, "/cluster-a/", Duration::from_secs(5)).await;
    let b = connect(&cluster, "/cluster-b/", Duration::from_secs(5)).await;
    let r1 = a.put(b"/registry/x", Bytes::from("a")).await.unwrap();
    b.put(b"/registry/x", Bytes::from("b")).await.unwrap();
    b.put(b"/registry/y", Bytes::from("b")).await.unwrap();
    // Each cluster sees only its own keys, under the names it wrote.
    let seen = a2
        .range(RangeRequest::new(KeyRange::prefix(&b"/registry/"[..])))
        .await
        .unwrap();
    assert_eq!(seen.kvs.len(), 1);
    assert_eq!(
        (&seen.kvs[0].key[..], &seen.kvs[0].value[..]),
        (&b"/registry/x"[..], &b"a"[..])
    );
    // Server a2 compacts; a learns of it from the shared record, and from etcd's refusals.
    let r2 = a.put(b"/registry/x", Bytes::from("a2")).await.unwrap();
    a2.compact(r2).await.unwrap();
    assert_eq!(a.compacted_revision().await.unwrap(), r2);
    match a.watch(KeyRange::prefix(&b"/registry/"[..]), r1).await {
        Err(StoreError::Compacted {
            requested,
            oldest_available,
        }) => {
            assert_eq!((requested, oldest_available), (r1, r2 + 1))
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    let fresh = connect(&cluster, "/cluster-a/", Duration::from_secs(5)).await;
    assert!(matches!(
        fresh
            .range(RangeRequest::new(KeyRange::prefix(&b"/registry/"[..])).at(r1))
            .await,
        Err(StoreError::Compacted { .. })
    ));
    // A server that missed the record hears it from etcd when its watch is refused.
    let blind = {
        let mut config = EtcdConfig::new(cluster.endpoints());
        config.compaction = None;
        config.prefix = Bytes::from_static(b"/cluster-c/");
        EtcdStore::connect(config).await.unwrap()
    };
    match blind.watch(KeyRange::prefix(&b"/"[..]), r1).await {
        Ok(mut w) => assert!(matches!(
            next(&mut w).await,
            Err(StoreError::Compacted { .. })
        )),
        Err(e) => assert!(matches!(e, StoreError::Compacted { .. }), "{e}"),
    }
    // An unreachable etcd is a clear error at connect, not a hang.
    let mut nowhere = EtcdConfig::new(vec!["127.0.0.1:1".into()]);
    nowhere.connect_timeout = Duration::from_secs(1);
    nowhere.request_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    match EtcdStore::connect(nowhere).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("127.0.0.1:1"), "{why}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// An etcd member that requires client certificates, killed when dropped (before its
/// directory goes).
struct TlsMember(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for TlsMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issue = |client: bool| {
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &ca_pem,
            KeyPair::from_pem(&ca_key.serialize_pem()).unwrap(),
        )
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server_pem, server_key) = issue(false);
    let (client_pem, client_key) = issue(true);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_file = write("ca.pem", &ca_pem);
    let cert_file = write("server.pem", &server_pem);
    let key_file = write("server-key.pem", &server_key);
    let (client_port, peer_port, metrics_port) = (port(), port(), port());
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = std::process::Command::new("etcd")
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--listen-client-urls")
        .arg(format!("https://127.0.0.1:{client_port}"))
        .arg("--advertise-client-urls")
        .arg(format!("https://127.0.0.1:{client_port}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer_port}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{peer_port}"))
        .arg("--initial-cluster")
        .arg(format!("tls=http://127.0.0.1:{peer_port}"))
        .arg("--listen-metrics-urls")
        .arg(format!("http://127.0.0.1:{metrics_port}"))
        .arg("--cert-file")
        .arg(&cert_file)
        .arg("--key-file")
        .arg(&key_file)
        .arg("--trusted-ca-file")
        .arg(&ca_file)
        .arg("--client-cert-auth")
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let member = TlsMember(child, dir);
    // Health on the plain metrics port.
    let healthy = (0..200).any(|_| {
        let ok = std::process::Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{metrics_port}/health")])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""));
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(healthy, "the TLS etcd member did not become healthy");
    let endpoint = format!("https://127.0.0.1:{client_port}");
    let config = |cert: bool| {
        let mut c = EtcdConfig::new(vec![endpoint.clone()]);
        c.compaction = None;
        c.request_timeout = Duration::from_secs(2);
        c.connect_timeout = Duration::from_secs(2);
        c.tls = Some(capstan_store::EtcdTls {
            ca_pem: ca_pem.clone().into_bytes(),
            cert_pem: cert.then(|| client_pem.clone().into_bytes()),
            key_pem: cert.then(|| client_key.clone().into_bytes()),
        });
        c
    };
    let store = EtcdStore::connect(config(true))
        .await
        .expect("TLS with a client certificate");
    let rev = store.put(b"tls/k", Bytes::from("v")).await.unwrap();
    assert_eq!(
        store.get(b"tls/k").await.unwrap().unwrap().mod_revision,
        rev
    );
    // Without a client certificate etcd refuses the handshake: a clear error, in time.
    let started = std::time::Instant::now();
    match EtcdStore::connect(config(false)).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains(&endpoint), "{why}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(member);
}
