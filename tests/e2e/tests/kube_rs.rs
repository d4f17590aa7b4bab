//! kube-rs (client and runtime) against the running binary over TLS: typed CRUD, patches,
//! paging, errors, and the `watcher` a user's control loop is built on.

use std::time::Duration;

use capstan_e2e::kube_client as client;
use capstan_e2e::Server;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

async fn make_ns(c: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "demo"}}, "data": {"v": value}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_patch_and_paging() {
    // Exact page sizes: without the kube-root-ca.crt the publisher would add.
    let s = Server::start_args(&["--controllers=*,-root-ca-cert-publisher"]);
    let c = client(&s).await;
    make_ns(&c, "kr").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "kr");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &i.to_string()),
        )
        .await
        .unwrap();
    }
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    let p = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "m"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().get("extra").map(String::as_str), Some("m"));
    let p = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"v": "s"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().get("v").map(String::as_str), Some("s"));
    match api.get("missing").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    match api.create(&PostParams::default(), &cm("c0", "dup")).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected a 409 Status, got {other:?}"),
    }
    api.delete("c0", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_streams_changes() {
    let s = Server::start();
    let c = client(&s).await;
    make_ns(&c, "kw").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "kw");
    api.create(&PostParams::default(), &cm("before", "0"))
        .await
        .unwrap();
    let stream = watcher(api.clone(), watcher::Config::default().labels("app=demo"));
    let mut stream = Box::pin(stream);
    // The writes start once the initial list is through, so they arrive as watch events.
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let mut listed_tx = Some(listed_tx);
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            listed_rx.await.unwrap();
            api.create(&PostParams::default(), &cm("after", "1"))
                .await
                .unwrap();
            api.patch(
                "after",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": "2"}})),
            )
            .await
            .unwrap();
            api.delete("after", &DeleteParams::default()).await.unwrap();
        })
    };
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.last().map(String::as_str) != Some("delete after") {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("watcher stalled")
            .expect("watcher error")
            .expect("watcher ended");
        match ev {
            watcher::Event::InitApply(o) => seen.push(format!("init {}", o.metadata.name.unwrap())),
            watcher::Event::Apply(o) => seen.push(format!(
                "apply {} {}",
                o.metadata.name.unwrap(),
                o.data.unwrap()["v"]
            )),
            watcher::Event::Delete(o) => seen.push(format!("delete {}", o.metadata.name.unwrap())),
            watcher::Event::InitDone => {
                if let Some(tx) = listed_tx.take() {
                    let _ = tx.send(());
                }
            }
            watcher::Event::Init => {}
        }
    }
    writer.await.unwrap();
    assert_eq!(
        seen,
        [
            "init before",
            "apply after 1",
            "apply after 2",
            "delete after"
        ]
    );
}

/// What kubectl users write (`cpu: 0.5`, a YAML number) is read back by kube-rs's typed
/// Pod: quantities come back as the canonical strings k8s-openapi's `Quantity` requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_clients_read_pods_written_with_numeric_quantities() {
    use k8s_openapi::api::core::v1::Pod;
    let s = Server::start();
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - name: c\n    image: i\n    resources: {limits: {cpu: 0.5, memory: 2000000000}}\n",
    );
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let pods: Api<Pod> = Api::default_namespaced(client(&s).await);
    let pod = pods.get("q").await.expect("a typed Pod");
    let limits = pod
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.resources)
        .and_then(|r| r.limits)
        .expect("limits");
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, "2G");
    let listed = pods.list(&ListParams::default()).await.expect("typed list");
    assert_eq!(listed.items.len(), 1);
}

/// The scheduler seen through kube-rs: a `watcher` observes a Pending pod become bound,
/// with PodScheduled=True, once a Node exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_a_pod_scheduled() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let s = Server::start();
    let c = client(&s).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "w"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let mut stream = Box::pin(watcher(
        pods.clone(),
        watcher::Config::default().fields("metadata.name=w"),
    ));
    // No node yet: the scheduler reports it Unschedulable.
    let unsched = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                let c = p.status.and_then(|s| s.conditions).unwrap_or_default();
                if let Some(c) = c.into_iter().find(|c| c.type_ == "PodScheduled") {
                    return c;
                }
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("an Unschedulable condition within 30 s");
    assert_eq!(
        (unsched.status.as_str(), unsched.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert_eq!(
        unsched.message.as_deref(),
        Some("no nodes available to schedule pods")
    );
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "k1"}})).unwrap();
    let nodes: Api<Node> = Api::all(c.clone());
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            "k1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
            "allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}})),
        )
        .await
        .unwrap();
    let bound = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let watcher::Event::Apply(p) = ev {
                if p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some() {
                    return p;
                }
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("bound within 30 s");
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("k1"));
    let cond = bound.status.unwrap().conditions.unwrap_or_default();
    assert!(
        cond.iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "{cond:?}"
    );
}

/// kube-rs's metadata API (what metadata informers, such as a garbage collector's, use):
/// get, list and watch answer PartialObjectMetadata, with the metadata and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_get_list_and_watch() {
    let s = Server::start();
    let c = client(&s).await;
    make_ns(&c, "meta").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "meta");
    api.create(&PostParams::default(), &cm("m0", "0"))
        .await
        .unwrap();
    let one = api.get_metadata("m0").await.unwrap();
    let types = one.types.as_ref().expect("get: kind and apiVersion");
    assert_eq!(
        (types.kind.as_str(), types.api_version.as_str()),
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    );
    assert_eq!(one.metadata.name.as_deref(), Some("m0"));
    assert_eq!(
        one.metadata.labels.as_ref().and_then(|l| l.get("app")),
        Some(&"demo".to_string())
    );
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.types.api_version, "meta.k8s.io/v1");
    assert!(list.metadata.resource_version.is_some());
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert!(names.contains(&"m0".to_string()), "{names:?}");
    assert!(list
        .items
        .iter()
        .all(|o| o.types.as_ref().map(|t| t.kind.as_str()) == Some("PartialObjectMetadata")));
    // A watch from that list's version sees the next write as PartialObjectMetadata.
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut events = Box::pin(
        api.watch_metadata(&kube::api::WatchParams::default().timeout(20), &rv)
            .await
            .unwrap(),
    );
    api.create(&PostParams::default(), &cm("m1", "1"))
        .await
        .unwrap();
    // Other writes may come first (the root-CA publisher fills the new namespace).
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.try_next().await.unwrap() {
            match ev {
                kube::api::WatchEvent::Added(o) | kube::api::WatchEvent::Modified(o) => {
                    assert_eq!(
                        o.types.as_ref().map(|t| t.kind.as_str()),
                        Some("PartialObjectMetadata"),
                        "{o:?}"
                    );
                    if o.metadata.name.as_deref() == Some("m1") {
                        return true;
                    }
                }
                kube::api::WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        false
    })
    .await
    .expect("ADDED m1 within 20 s");
    assert!(seen, "the watch ended before m1 was added");
    // On the wire: only metadata crosses (kube-rs would drop other fields when decoding).
    let c = client(&s).await;
    let ask = |accept: &str| {
        http::Request::get("/api/v1/namespaces/meta/configmaps/m1")
            .header("Accept", accept)
            .body(Vec::new())
            .unwrap()
    };
    let meta = c
        .request_text(ask(
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        ))
        .await
        .unwrap();
    assert!(
        meta.contains("\"PartialObjectMetadata\"") && !meta.contains("\"data\""),
        "{meta}"
    );
    let whole = c.request_text(ask("application/json")).await.unwrap();
    assert!(
        whole.contains("\"data\""),
        "a plain get has the object: {whole}"
    );
}
