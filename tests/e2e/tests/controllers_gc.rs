//! The garbage collector through kubectl and kube-rs against the binary: background,
//! foreground and orphan propagation, dangling and misplaced owner references, several
//! owners, cluster-scoped owners and custom resources (owners and dependents made by hand,
//! so no other controller is needed).

use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn apply(s: &Server, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    let (o, e) = text(&out);
    assert!(out.status.success(), "apply failed: {o}{e}\n{yaml}");
}

fn get_json(s: &Server, ns: &str, what: &str) -> Option<Value> {
    let mut args = vec!["get", what, "-o", "json", "--ignore-not-found"];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    let out = s.kubectl(&args);
    let (o, e) = text(&out);
    assert!(out.status.success(), "get {what}: {e}");
    if o.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&o).expect("json"))
    }
}

fn uid(s: &Server, ns: &str, what: &str) -> String {
    get_json(s, ns, what).expect("exists")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

/// Poll `f` until it holds; panic naming `what` after the deadline.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone(s: &Server, ns: &str, what: &str) -> bool {
    get_json(s, ns, what).is_none()
}

/// An ownerReferences entry.
fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str, block: bool) -> String {
    format!("{{apiVersion: {api_version}, kind: {kind}, name: {name}, uid: {uid}, blockOwnerDeletion: {block}}}")
}

fn configmap(ns: &str, name: &str, owners: &[String], finalizers: &[&str]) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences: [{}]\n  finalizers: [{}]\ndata: {{k: v}}\n---\n",
        owners.join(", "),
        finalizers.join(", ")
    )
}

fn cm_ref(name: &str, uid: &str, block: bool) -> String {
    owner_ref("v1", "ConfigMap", name, uid, block)
}

#[test]
fn background_delete_removes_dependents_and_their_dependents() {
    let s = Server::start();
    apply(&s, &configmap("default", "owner", &[], &[]));
    let o = uid(&s, "default", "cm/owner");
    apply(
        &s,
        &format!(
            "{}apiVersion: v1\nkind: Secret\nmetadata: {{name: dep-secret, namespace: default, ownerReferences: [{}]}}\nstringData: {{a: b}}\n",
            configmap("default", "dep-cm", &[cm_ref("owner", &o, false)], &[]),
            cm_ref("owner", &o, false)
        ),
    );
    let d = uid(&s, "default", "cm/dep-cm");
    apply(
        &s,
        &configmap("default", "grandchild", &[cm_ref("dep-cm", &d, false)], &[]),
    );
    apply(&s, &configmap("default", "bystander", &[], &[]));
    // Nothing is collected while the owner lives.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gone(&s, "default", "cm/dep-cm") && !gone(&s, "default", "cm/grandchild"));
    let out = s.kubectl_ok(&["delete", "cm", "owner"]);
    assert_eq!(out.trim(), "configmap \"owner\" deleted");
    wait_until("the dependents are collected", || {
        gone(&s, "default", "cm/dep-cm")
            && gone(&s, "default", "secret/dep-secret")
            && gone(&s, "default", "cm/grandchild")
    });
    assert!(!gone(&s, "default", "cm/bystander"));
}

#[test]
fn foreground_delete_waits_for_blocking_dependents() {
    let s = Server::start();
    apply(&s, &configmap("default", "owner", &[], &[]));
    let o = uid(&s, "default", "cm/owner");
    apply(
        &s,
        &format!(
            "{}{}",
            configmap(
                "default",
                "held",
                &[cm_ref("owner", &o, true)],
                &["example.com/hold"]
            ),
            configmap("default", "free", &[cm_ref("owner", &o, false)], &[]),
        ),
    );
    // kubectl waits (--wait defaults to true) until the owner is really gone.
    let mut del = s.kubectl_spawn(&["delete", "cm", "owner", "--cascade=foreground"]);
    wait_until("the blocking dependent is being deleted", || {
        get_json(&s, "default", "cm/held")
            .is_some_and(|h| h["metadata"]["deletionTimestamp"].is_string())
    });
    wait_until("the non-blocking dependent is gone", || {
        gone(&s, "default", "cm/free")
    });
    let owner = get_json(&s, "default", "cm/owner").expect("the owner waits");
    assert!(
        owner["metadata"]["deletionTimestamp"].is_string(),
        "{owner}"
    );
    assert_eq!(
        owner["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gone(&s, "default", "cm/owner"),
        "the owner must wait for its blocking dependent"
    );
    assert!(
        del.try_wait().expect("kubectl").is_none(),
        "kubectl delete must still wait"
    );
    s.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = del.wait_with_output().expect("kubectl delete");
    let (o_, e) = text(&out);
    assert!(out.status.success(), "{o_}{e}");
    assert_eq!(o_.trim(), "configmap \"owner\" deleted");
    assert!(gone(&s, "default", "cm/owner") && gone(&s, "default", "cm/held"));
}

/// Two objects owning each other, both blocking: a foreground delete of either would wait
/// forever; as upstream, the collector unblocks the dependent's references and both go.
#[test]
fn a_foreground_delete_through_an_ownership_cycle_completes() {
    let s = Server::start();
    apply(&s, &configmap("default", "ring-a", &[], &[]));
    let a = uid(&s, "default", "cm/ring-a");
    apply(
        &s,
        &configmap("default", "ring-b", &[cm_ref("ring-a", &a, true)], &[]),
    );
    let b = uid(&s, "default", "cm/ring-b");
    apply(
        &s,
        &configmap("default", "ring-a", &[cm_ref("ring-b", &b, true)], &[]),
    );
    assert_eq!(
        uid(&s, "default", "cm/ring-a"),
        a,
        "the same object, now owned"
    );
    // kubectl waits until ring-a is really gone.
    let out = s.kubectl(&[
        "delete",
        "cm",
        "ring-a",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert_eq!(o.trim(), "configmap \"ring-a\" deleted");
    wait_until("the cycle is collected", || {
        gone(&s, "default", "cm/ring-a") && gone(&s, "default", "cm/ring-b")
    });
}

#[test]
fn orphan_delete_leaves_dependents_without_the_reference() {
    let s = Server::start();
    apply(&s, &configmap("default", "owner", &[], &[]));
    apply(&s, &configmap("default", "other", &[], &[]));
    let o = uid(&s, "default", "cm/owner");
    let other = uid(&s, "default", "cm/other");
    apply(
        &s,
        &format!(
            "{}{}",
            configmap("default", "dep-1", &[cm_ref("owner", &o, true)], &[]),
            configmap(
                "default",
                "dep-2",
                &[cm_ref("owner", &o, true), cm_ref("other", &other, false)],
                &[]
            ),
        ),
    );
    let out = s.kubectl_ok(&["delete", "cm", "owner", "--cascade=orphan"]);
    assert_eq!(out.trim(), "configmap \"owner\" deleted");
    assert!(gone(&s, "default", "cm/owner"));
    let d1 = get_json(&s, "default", "cm/dep-1").expect("dep-1 stays");
    assert!(d1["metadata"].get("ownerReferences").is_none(), "{d1}");
    let d2 = get_json(&s, "default", "cm/dep-2").expect("dep-2 stays");
    let refs = d2["metadata"]["ownerReferences"].as_array().expect("refs");
    assert_eq!(refs.len(), 1, "{d2}");
    assert_eq!(refs[0]["uid"], other.as_str());
    // Orphans are not collected later either.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gone(&s, "default", "cm/dep-1"));
}

#[test]
fn dangling_reference_and_owner_in_another_namespace_are_collected() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "a"]);
    s.kubectl_ok(&["create", "namespace", "b"]);
    apply(&s, &configmap("a", "owner", &[], &[]));
    let o = uid(&s, "a", "cm/owner");
    apply(
        &s,
        &format!(
            "{}{}",
            configmap("b", "misplaced", &[cm_ref("owner", &o, false)], &[]),
            configmap(
                "a",
                "orphaned",
                &[cm_ref(
                    "nobody",
                    "4b1c5c3e-0000-4000-8000-00000000dead",
                    false
                )],
                &[]
            ),
        ),
    );
    wait_until(
        "the dependent with a dangling reference is collected",
        || gone(&s, "a", "cm/orphaned"),
    );
    wait_until(
        "the dependent of an owner in another namespace is collected",
        || gone(&s, "b", "cm/misplaced"),
    );
    assert!(!gone(&s, "a", "cm/owner"), "the owner itself stays");
    wait_until("an OwnerRefInvalidNamespace warning", || {
        s.kubectl_ok(&["get", "events", "-n", "b"])
            .contains("OwnerRefInvalidNamespace")
    });
}

#[test]
fn a_dependent_with_two_owners_survives_one() {
    let s = Server::start();
    apply(
        &s,
        &format!(
            "{}{}",
            configmap("default", "o1", &[], &[]),
            configmap("default", "o2", &[], &[])
        ),
    );
    let (u1, u2) = (uid(&s, "default", "cm/o1"), uid(&s, "default", "cm/o2"));
    apply(
        &s,
        &configmap(
            "default",
            "shared",
            &[cm_ref("o1", &u1, true), cm_ref("o2", &u2, true)],
            &[],
        ),
    );
    s.kubectl_ok(&["delete", "cm", "o1"]);
    wait_until("the dead owner's reference is removed", || {
        get_json(&s, "default", "cm/shared").is_some_and(|d| {
            d["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["uid"] == u2.as_str())
        })
    });
    s.kubectl_ok(&["delete", "cm", "o2"]);
    wait_until("the last owner's dependent is collected", || {
        gone(&s, "default", "cm/shared")
    });
}

#[test]
fn cluster_scoped_owners_and_dependents() {
    let s = Server::start();
    apply(&s, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: owner-role}\nrules: []\n");
    let role = uid(&s, "", "clusterrole/owner-role");
    let role_ref = owner_ref(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "owner-role",
        &role,
        true,
    );
    apply(
        &s,
        &configmap(
            "default",
            "of-a-cluster-role",
            std::slice::from_ref(&role_ref),
            &[],
        ),
    );
    apply(&s, &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: child-role, ownerReferences: [{role_ref}]}}\nrules: []\n"));
    // A namespaced owner of a cluster-scoped object counts as absent.
    apply(&s, &configmap("default", "ns-owner", &[], &[]));
    let ns_owner = uid(&s, "default", "cm/ns-owner");
    apply(&s, &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: bad-child, ownerReferences: [{}]}}\nrules: []\n", cm_ref("ns-owner", &ns_owner, false)));
    wait_until(
        "a cluster-scoped object with a namespaced owner is collected",
        || gone(&s, "", "clusterrole/bad-child"),
    );
    assert!(
        !gone(&s, "default", "cm/of-a-cluster-role") && !gone(&s, "", "clusterrole/child-role")
    );
    s.kubectl_ok(&["delete", "clusterrole", "owner-role"]);
    wait_until(
        "the cluster-scoped owner's dependents are collected",
        || gone(&s, "default", "cm/of-a-cluster-role") && gone(&s, "", "clusterrole/child-role"),
    );
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

#[test]
fn custom_resources_own_and_are_owned() {
    let s = Server::start();
    apply(&s, CRD);
    wait_until("the CRD is served", || {
        s.kubectl(&["get", "widgets"]).status.success()
    });
    apply(
        &s,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\n",
    );
    let w1 = uid(&s, "default", "widget/w1");
    apply(
        &s,
        &configmap(
            "default",
            "of-widget",
            &[owner_ref("example.com/v1", "Widget", "w1", &w1, true)],
            &[],
        ),
    );
    apply(&s, &configmap("default", "cm-owner", &[], &[]));
    let c = uid(&s, "default", "cm/cm-owner");
    apply(&s, &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w2, namespace: default, ownerReferences: [{}]}}\n", cm_ref("cm-owner", &c, true)));
    // Foreground through a custom resource: the widget waits for its ConfigMap.
    s.kubectl_ok(&["delete", "widget", "w1", "--cascade=foreground"]);
    assert!(gone(&s, "default", "widget/w1") && gone(&s, "default", "cm/of-widget"));
    s.kubectl_ok(&["delete", "cm", "cm-owner"]);
    wait_until("the widget owned by a ConfigMap is collected", || {
        gone(&s, "default", "widget/w2")
    });
}

async fn kube_client(s: &Server) -> kube::Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_are_validated_and_replication_controllers_orphan_by_default() {
    use k8s_openapi::api::core::v1::{ConfigMap, ReplicationController};
    use kube::api::{Api, DeleteParams, PostParams};

    let s = Server::start();
    let client = kube_client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |v: Value| -> ConfigMap { serde_json::from_value(v).expect("cm") };
    cms.create(
        &PostParams::default(),
        &cm(serde_json::json!({"metadata": {"name": "x"}})),
    )
    .await
    .expect("x");
    let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground","orphanDependents":true}"#;
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps/x")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .expect("request");
    match client.request::<Value>(req).await {
        Err(kube::Error::Api(st)) => {
            assert_eq!(st.code, 422, "{st:?}");
            assert!(
                st.message
                    .contains("orphanDependents and deletionPropagation cannot be both set"),
                "{st:?}"
            );
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    assert!(cms.get_opt("x").await.expect("get").is_some());
    // A core/v1 ReplicationController deleted with no policy orphans its dependents.
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rc"},
        "spec": {"replicas": 0, "selector": {"app": "rc"}, "template": {"metadata": {"labels": {"app": "rc"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .expect("rc");
    let rc = rcs
        .create(&PostParams::default(), &rc)
        .await
        .expect("create rc");
    // Dependents created just before the delete: the GC may see them only after the RC is
    // gone, and must orphan them then rather than delete them as dangling.
    let names: Vec<String> = (0..8).map(|i| format!("of-rc-{i}")).collect();
    for name in &names {
        cms.create(
            &PostParams::default(),
            &cm(serde_json::json!({"metadata": {"name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController", "name": "rc",
                "uid": rc.metadata.uid, "blockOwnerDeletion": true}]}})),
        )
        .await
        .expect("of-rc");
    }
    let marked = rcs
        .delete("rc", &DeleteParams::default())
        .await
        .expect("delete rc");
    let marked = marked.left().expect("marked with the orphan finalizer");
    assert_eq!(marked.metadata.finalizers, Some(vec!["orphan".to_string()]));
    let end = Instant::now() + DEADLINE;
    while rcs.get_opt("rc").await.expect("get").is_some() {
        assert!(Instant::now() < end, "the RC never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in &names {
        // Orphaning a dependent the GC saw late may follow the RC's removal: wait for it.
        let end = Instant::now() + DEADLINE;
        loop {
            let dep = cms.get(name).await.expect("the dependent stays");
            if dep.metadata.owner_references.is_none() {
                break;
            }
            assert!(Instant::now() < end, "{name} kept its reference: {dep:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // And none is deleted afterwards as dangling.
    let listed = cms.list(&Default::default()).await.expect("list");
    let left: Vec<_> = listed
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .filter(|n| n.starts_with("of-rc-"))
        .collect();
    assert_eq!(left.len(), names.len(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_foreground_delete() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    let s = Server::start();
    let client = kube_client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = |v: Value| -> ConfigMap { serde_json::from_value(v).expect("cm") };
    let owner = api
        .create(
            &PostParams::default(),
            &cm(serde_json::json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("owner");
    let o_uid = owner.metadata.uid.clone().expect("uid");
    api.create(
        &PostParams::default(),
        &cm(serde_json::json!({"metadata": {"name": "dep", "finalizers": ["example.com/hold"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": o_uid, "blockOwnerDeletion": true}]}})),
    )
    .await
    .expect("dep");
    let deleted = api
        .delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete");
    let marked = deleted.left().expect("the owner is marked, not gone");
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
    let end = Instant::now() + DEADLINE;
    loop {
        let dep = api.get("dep").await.expect("dep");
        if dep.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(Instant::now() < end, "the GC never deleted the dependent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        api.get_opt("owner").await.expect("get").is_some(),
        "the owner waits"
    );
    api.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    let end = Instant::now() + DEADLINE;
    while api.get_opt("owner").await.expect("get").is_some() {
        assert!(Instant::now() < end, "the owner never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
