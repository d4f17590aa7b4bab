//! Three capstan servers on one 3-member etcd (Debian's `etcd` on loopback): kubectl writes
//! through one and watches through another; under concurrent writers one server and one
//! etcd member are killed with SIGKILL; every acknowledged object is then read back, the
//! watches resume without gap or repeat, and the controllers and scheduler move to a
//! surviving server (a Deployment made after the kill becomes available).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_e2e::kube_client as client;
use capstan_e2e::{get_json, wait_for, Server};
use capstan_store::etcd::testing::EtcdCluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;

/// A second (third) server of the same cluster: the first one's CA, service-account key
/// and admin token copied into a data dir of its own, as the README says.
fn join_data_dir(first: &Path, dir: &Path) {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    for entry in std::fs::read_dir(first.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pki.join(entry.file_name())).unwrap();
    }
    std::fs::copy(first.join("admin-token"), dir.join("admin-token")).unwrap();
}

fn server_args(datastore: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--datastore",
        datastore,
        "--leader-elect-lease-duration-seconds",
        "4",
        "--watch-bookmark-interval-seconds",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(dir: &Path, args: &[String]) -> Server {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_args(dir, &refs)
}

fn lease_holder(s: &Server, name: &str) -> Option<String> {
    get_json(s, &["-n", "kube-system", "lease", name]).and_then(|l| {
        l.pointer("/spec/holderIdentity")?
            .as_str()
            .map(str::to_string)
    })
}

/// Watch ConfigMaps in `ns` through `c` from `rv`, recording (name, resourceVersion) of
/// every ADDED event, until `stop` says so or the stream ends; returns the last RV seen.
async fn record_watch(
    c: Client,
    ns: &str,
    rv: String,
    seen: Arc<Mutex<Vec<(String, u64)>>>,
) -> Result<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(c, ns);
    let mut last = rv.clone();
    let params = WatchParams::default().timeout(290);
    let stream = api.watch(&params, &rv).await.map_err(|e| e.to_string())?;
    let mut stream = stream.boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(WatchEvent::Added(cm))) => {
                let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                let n: u64 = rv.parse().map_err(|_| format!("resourceVersion {rv:?}"))?;
                seen.lock()
                    .unwrap()
                    .push((cm.metadata.name.clone().unwrap_or_default(), n));
                last = rv;
            }
            Ok(Some(WatchEvent::Bookmark(b))) => last = b.metadata.resource_version,
            Ok(Some(WatchEvent::Error(e))) => {
                return Err(format!("watch error {e:?} after {last}"))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Ok(last),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_on_etcd_survive_a_killed_server_and_member() {
    let mut etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("a 3-member etcd cluster");
    let datastore = etcd.datastore();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = start(dirs[0].path(), &server_args(&datastore, &[]));
    join_data_dir(dirs[0].path(), dirs[1].path());
    join_data_dir(dirs[0].path(), dirs[2].path());
    // B plays two nodes (they must outlive A, whose death the test is about).
    let b = start(
        dirs[1].path(),
        &server_args(&datastore, &["--simulated-nodes", "2"]),
    );
    let c = start(dirs[2].path(), &server_args(&datastore, &[]));

    // kubectl writes through A and watches through B: B's watch is fed by etcd, not by A.
    a.kubectl_ok(&["create", "namespace", "ha"]);
    let follow = b.kubectl_follow(&["-n", "ha", "get", "configmaps", "--watch", "-o", "name"]);
    a.kubectl_ok(&[
        "-n",
        "ha",
        "create",
        "configmap",
        "through-a",
        "--from-literal=k=v",
    ]);
    follow.wait_for_line("the watch through B", Duration::from_secs(20), |l| {
        l.trim() == "configmap/through-a"
    });
    // Served types follow etcd too: a CRD made through C is served by A.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.ha.example.com"},
        "spec": {"group": "ha.example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &crd.to_string());
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "A serves the CRD made through C",
        Duration::from_secs(20),
        || {
            a.kubectl(&["-n", "ha", "get", "widgets"])
                .status
                .success()
                .then_some(())
        },
    );

    // Watches from one resourceVersion through B (which survives) and A (which is killed).
    let clients = [client(&a).await, client(&b).await, client(&c).await];
    let start_rv = Api::<ConfigMap>::namespaced(clients[1].clone(), "ha")
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let via_b = Arc::new(Mutex::new(Vec::new()));
    let via_a = Arc::new(Mutex::new(Vec::new()));
    let watch_b = tokio::spawn(record_watch(
        clients[1].clone(),
        "ha",
        start_rv.clone(),
        via_b.clone(),
    ));
    let watch_a = tokio::spawn(record_watch(
        clients[0].clone(),
        "ha",
        start_rv.clone(),
        via_a.clone(),
    ));

    // Service addresses stay unique when three servers allocate at once (the allocation
    // keys go into each Service's etcd transaction).
    let mut makers = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        makers.push(tokio::spawn(async move {
            let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c, "ha");
            let mut made = Vec::new();
            for j in 0..10 {
                let svc = serde_json::from_value(json!({"metadata": {"name": format!("s{i}-{j}")},
                    "spec": {"type": "NodePort", "ports": [{"port": 80}]}}))
                .unwrap();
                let s = api.create(&PostParams::default(), &svc).await.unwrap();
                let spec = s.spec.unwrap();
                made.push((
                    spec.cluster_ip.unwrap(),
                    spec.ports.unwrap()[0].node_port.unwrap(),
                ));
            }
            made
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    let mut node_ports = std::collections::BTreeSet::new();
    for m in makers {
        for (ip, port) in m.await.unwrap() {
            assert!(ips.insert(ip.clone()), "ClusterIP {ip} given twice");
            assert!(node_ports.insert(port), "NodePort {port} given twice");
        }
    }
    assert_eq!((ips.len(), node_ports.len()), (30, 30));

    // Concurrent writers through all three servers; only what was acknowledged counts.
    const WRITERS: usize = 4;
    const EACH: usize = 150;
    let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let clients = clients.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let name = format!("w{w}-{i:04}");
                let api: Api<ConfigMap> = Api::namespaced(clients[(w + i) % 3].clone(), "ha");
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                )
                .unwrap();
                if let Ok(made) = api.create(&PostParams::default(), &cm).await {
                    let rv = made.metadata.resource_version.unwrap().parse().unwrap();
                    acked.lock().unwrap().insert(name, rv);
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < WRITERS * EACH / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holders = (
        lease_holder(&b, "kube-controller-manager"),
        lease_holder(&b, "kube-scheduler"),
    );
    let killed_at = Instant::now();
    a.kill();
    etcd.kill(0);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= WRITERS * EACH * 2 / 3,
        "most writes go through the surviving servers: {} acknowledged",
        acked.len()
    );

    // Leadership moves to a surviving server within the lease duration (+ a renew period).
    let moved = wait_for(
        "the controllers' lease to move",
        Duration::from_secs(30),
        || {
            let now = (
                lease_holder(&b, "kube-controller-manager"),
                lease_holder(&b, "kube-scheduler"),
            );
            (now.0 != holders.0 && now.1 != holders.1 && now.0.is_some() && now.1.is_some())
                .then(|| killed_at.elapsed())
        },
    );
    eprintln!(
        "figure: controller and scheduler leadership moved {moved:?} after the kill (lease 4 s)"
    );

    // Every acknowledged object is there, unchanged, through each surviving server.
    for (i, s) in [&b, &c].into_iter().enumerate() {
        let list = Api::<ConfigMap>::namespaced(client(s).await, "ha")
            .list(&Default::default())
            .await
            .unwrap();
        let stored: BTreeMap<String, u64> = list
            .items
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap(),
                    cm.metadata
                        .resource_version
                        .clone()
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            })
            .collect();
        for (name, rv) in &acked {
            assert_eq!(
                stored.get(name),
                Some(rv),
                "server {i}: acknowledged {name} at {rv}"
            );
        }
    }

    // The watch through B never broke: every acknowledged create once, in RV order.
    let max_rv = *acked.values().max().unwrap();
    wait_for(
        "B's watch to reach the last write",
        Duration::from_secs(30),
        || {
            via_b
                .lock()
                .unwrap()
                .iter()
                .any(|(_, rv)| *rv >= max_rv)
                .then_some(())
        },
    );
    let check = |events: &[(String, u64)], who: &str| {
        assert!(
            events.windows(2).all(|p| p[0].1 < p[1].1),
            "{who}: resourceVersions strictly increase"
        );
        let names: std::collections::BTreeSet<&str> =
            events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), events.len(), "{who}: no event twice");
        for (name, rv) in &acked {
            assert!(
                events.iter().any(|(n, r)| n == name && r == rv),
                "{who}: the acknowledged create of {name} ({rv}) was delivered"
            );
        }
    };
    check(&via_b.lock().unwrap(), "watch through B");
    assert!(!watch_b.is_finished(), "the watch through B is still open");
    watch_b.abort();

    // The watch through A ended with A; resumed through C from its last resourceVersion it
    // continues without gap or repeat.
    let last_a = watch_a
        .await
        .unwrap()
        .expect("A's watch ended without an error event");
    let resumed = Arc::new(Mutex::new(Vec::new()));
    let watch_c = tokio::spawn(record_watch(
        clients[2].clone(),
        "ha",
        last_a,
        resumed.clone(),
    ));
    wait_for(
        "the resumed watch to reach the last write",
        Duration::from_secs(30),
        || {
            resumed
                .lock()
                .unwrap()
                .iter()
                .any(|(_, rv)| *rv >= max_rv)
                .then_some(())
        },
    );
    let mut joined = via_a.lock().unwrap().clone();
    joined.extend(resumed.lock().unwrap().iter().cloned());
    check(&joined, "watch through A resumed through C");
    watch_c.abort();

    // Controllers and scheduler carry on: a Deployment made now becomes available on the
    // simulated nodes B runs.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "after-the-kill", "namespace": "ha"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "after"}},
            "template": {"metadata": {"labels": {"app": "after"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &dep.to_string());
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the Deployment to become available",
        Duration::from_secs(60),
        || {
            let d = get_json(&b, &["-n", "ha", "deployment", "after-the-kill"])?;
            (d.pointer("/status/availableReplicas")?.as_i64()? == 2).then_some(())
        },
    );
    drop(follow);
}

fn capstan(args: &[&str]) -> String {
    let out = std::process::Command::new(capstan_e2e::capstan_bin())
        .args(args)
        .output()
        .expect("run capstan");
    let (stdout, stderr) = capstan_e2e::text(&out);
    assert!(out.status.success(), "capstan {args:?}: {stdout}{stderr}");
    stdout
}

/// name → resourceVersion of the ConfigMaps in `ns`, at `rv` exactly (or the latest).
async fn config_maps(c: &Client, ns: &str, rv: Option<&str>) -> BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let mut params = kube::api::ListParams::default();
    if let Some(rv) = rv {
        params = params.at(rv).matching(kube::api::VersionMatch::Exact);
    }
    api.list(&params)
        .await
        .expect("list configmaps")
        .items
        .into_iter()
        .map(|cm| {
            (
                cm.metadata.name.unwrap_or_default(),
                cm.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_to_sqlite_and_to_etcd() {
    let original_dir = tempfile::tempdir().unwrap();
    let original = Server::start_with_args(original_dir.path(), &["--disable-controllers"]);
    original.kubectl_ok(&["create", "namespace", "load"]);
    let c = client(&original).await;
    // Writers create and update ConfigMaps while the backup is taken.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (c, stop) = (c.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::namespaced(c, "load");
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5000 {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("w{w}-{}", i % 200)}, "data": {"i": i.to_string()}}),
                )
                .unwrap();
                if i < 200 {
                    api.create(&PostParams::default(), &cm).await.unwrap();
                } else {
                    let name = format!("w{w}-{}", i % 200);
                    api.replace(&name, &PostParams::default(), &{
                        let mut cur = api.get(&name).await.unwrap();
                        cur.data = cm.data.clone();
                        cur
                    })
                    .await
                    .unwrap();
                }
                i += 1;
            }
            i
        }));
    }
    // Every ConfigMap made, updates under way.
    wait_for("writes under way", Duration::from_secs(60), || {
        original
            .kubectl_ok(&["-n", "load", "get", "configmaps", "-o", "name"])
            .lines()
            .count()
            .ge(&600)
            .then_some(())
    });
    let file = original_dir.path().join("backup.snap");
    let printed = capstan(&[
        "backup",
        file.to_str().unwrap(),
        "--data-dir",
        original_dir.path().to_str().unwrap(),
    ]);
    // "snapshot of N keys at revision R"
    let revision = printed
        .split_whitespace()
        .last()
        .expect("the snapshot's revision")
        .to_string();
    let at_backup = config_maps(&c, "load", Some(&revision)).await;
    assert!(at_backup.len() >= 600);
    // The writers went on past the backup's revision before they stop.
    let rev: u64 = revision.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let now = loop {
        let now = config_maps(&c, "load", None).await;
        if now.values().any(|v| v.parse::<u64>().unwrap() > rev + 100) {
            break now;
        }
        assert!(Instant::now() < deadline, "no writes after the backup");
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        assert!(w.await.unwrap() > 200, "the writers were updating");
    }
    assert_ne!(now, at_backup, "writes went on after the backup");

    // Into a new SQLite data dir (with the cluster's CA and token), served as it was.
    let sqlite_dir = tempfile::tempdir().unwrap();
    join_data_dir(original_dir.path(), sqlite_dir.path());
    capstan(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        sqlite_dir.path().to_str().unwrap(),
    ]);
    let restored = Server::start_with_args(sqlite_dir.path(), &["--disable-controllers"]);
    assert_eq!(
        config_maps(&client(&restored).await, "load", None).await,
        at_backup,
        "the SQLite restore serves every object at its resourceVersion"
    );
    drop(restored);

    // Into etcd: the cluster moves from SQLite to etcd with the same resourceVersions.
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .unwrap()
        .expect("an etcd member");
    let etcd_dir = tempfile::tempdir().unwrap();
    join_data_dir(original_dir.path(), etcd_dir.path());
    let datastore = etcd.datastore();
    capstan(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        etcd_dir.path().to_str().unwrap(),
        "--datastore",
        &datastore,
    ]);
    let on_etcd = Server::start_with_args(
        etcd_dir.path(),
        &["--disable-controllers", "--datastore", &datastore],
    );
    let ec = client(&on_etcd).await;
    assert_eq!(
        config_maps(&ec, "load", None).await,
        at_backup,
        "the etcd restore serves every object at its resourceVersion"
    );
    // And it goes on from there: a write gets a later resourceVersion.
    on_etcd.kubectl_ok(&["-n", "load", "create", "configmap", "after-restore"]);
    let after = config_maps(&ec, "load", None).await;
    let rv: u64 = after["after-restore"].parse().unwrap();
    assert!(rv > revision.parse().unwrap());
    // A backup of the etcd datastore holds the same objects.
    let again = etcd_dir.path().join("again.snap");
    capstan(&["backup", again.to_str().unwrap(), "--datastore", &datastore]);
    let snap = capstan_store::snapshot::read(&again).expect("read the etcd backup");
    let prefix = "/registry/configmaps/load/";
    let in_backup: BTreeMap<String, String> = snap
        .kvs
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(&kv.key).ok()?;
            Some((
                key.strip_prefix(prefix)?.to_string(),
                kv.mod_revision.to_string(),
            ))
        })
        .collect();
    assert_eq!(
        in_backup, after,
        "the etcd backup holds what the server serves"
    );
}
