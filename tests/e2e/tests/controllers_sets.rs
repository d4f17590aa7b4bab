//! The statefulset, daemonset and disruption loops and the pods/eviction subresource through
//! kubectl and kube-rs against the binary with simulated nodes: ordered ordinal pods and
//! their claims, partitioned rolling updates and undo, daemons per eligible node, budgets.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_e2e::Server;
use capstan_e2e::{apply, get_json, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::EvictParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(30);

/// Poll `f` until it returns Some, or fail naming what was awaited.
fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn image(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Live (not terminating) pods with `selector`, by name.
fn pods(s: &Server, selector: &str) -> Vec<Value> {
    let mut v: Vec<Value> = get_json(s, &["pods", "-l", selector])
        .map(|l| items(&l))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    v.sort_by_key(name);
    v
}

fn sts_yaml(name: &str, replicas: i32, image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
{extra_spec}  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        readinessProbe:
          exec:
            command: ["true"]
          initialDelaySeconds: 1
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      storageClassName: local
      resources:
        requests:
          storage: 1Gi
"#
    )
}

/// A StatefulSet's claims need a class that binds on first consumer: nothing provisions
/// volumes here, and the scheduler holds pods whose immediate claims are unbound.
fn apply_sts(s: &Server, yaml: &str) {
    apply(
        s,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    apply(s, yaml);
}

fn sts_status(s: &Server, name: &str) -> Value {
    get_json(s, &["sts", name])
        .map(|v| v["status"].clone())
        .unwrap_or_default()
}

#[test]
fn a_statefulset_comes_up_in_order_with_stable_names_and_claims_and_scales_down_from_the_top() {
    let s = Server::start_args(&["--simulated-nodes", "3"]);
    apply_sts(&s, &sts_yaml("web", 3, "nginx:1.27", ""));
    // Ordered: web-N appears only once web-0..N-1 exist and are Ready.
    let mut seen_partial = false;
    wait_for("3 Ready pods, created in ordinal order", WITHIN, || {
        let ps = pods(&s, "app=web");
        let names: Vec<String> = ps.iter().map(name).collect();
        let expected: Vec<String> = (0..names.len()).map(|i| format!("web-{i}")).collect();
        assert_eq!(names, expected, "ordinals must come up without gaps");
        for (i, p) in ps.iter().enumerate().skip(1) {
            assert!(
                ready(&ps[i - 1]),
                "{} exists while {} is not Ready",
                name(p),
                name(&ps[i - 1])
            );
        }
        if !ps.is_empty() && ps.len() < 3 {
            seen_partial = true;
        }
        (ps.len() == 3 && ps.iter().all(ready)).then_some(())
    });
    // Polls can miss the partial states on a fast run; the record cannot: each pod was
    // made no earlier than its predecessor became Ready (RFC 3339 in UTC sorts as time).
    let ps = pods(&s, "app=web");
    let ready_at = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or("")
            .to_string()
    };
    for i in 1..ps.len() {
        let created = ps[i]["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("");
        assert!(
            created >= ready_at(&ps[i - 1]).as_str(),
            "{} was made at {created}, before {} was Ready at {} (seen partial states: {seen_partial})",
            name(&ps[i]),
            name(&ps[i - 1]),
            ready_at(&ps[i - 1])
        );
    }
    for (i, p) in ps.iter().enumerate() {
        let n = format!("web-{i}");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            n.as_str()
        );
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string().as_str()
        );
        assert_eq!(p["spec"]["hostname"], n.as_str());
        assert_eq!(p["spec"]["subdomain"], "web-svc");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        let vol = p["spec"]["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == "www").cloned())
            .unwrap_or_default();
        assert_eq!(
            vol["persistentVolumeClaim"]["claimName"],
            format!("www-web-{i}").as_str(),
            "{p}"
        );
    }
    let pvcs = s.kubectl_ok(&["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(
            pvcs.contains(&format!("persistentvolumeclaim/www-web-{i}")),
            "{pvcs}"
        );
    }
    let st = wait_for("status to count 3 ready", WITHIN, || {
        let st = sts_status(&s, "web");
        (st["readyReplicas"] == 3 && st["availableReplicas"] == 3).then_some(st)
    });
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["currentReplicas"], 3);
    assert_eq!(st["updatedReplicas"], 3);
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    assert!(st["currentRevision"]
        .as_str()
        .unwrap_or_default()
        .starts_with("web-"));
    assert_eq!(st["observedGeneration"], 1);
    let out = s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=20s"]);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let revs = s.kubectl_ok(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revs.lines().count(), 1, "{revs}");

    // Scale down: the highest ordinal goes first, and the next only once it is gone.
    // The order is read from a watch, which sees every step; polling can miss the moment
    // between web-2 going and web-1 being marked on a busy machine.
    let watch = s.kubectl_follow(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-w",
        "--output-watch-events",
        "-o",
        "jsonpath={.type} {.object.metadata.name} {.object.metadata.deletionTimestamp}{\"\\n\"}",
    ]);
    watch.wait_for_line("web-2 listed", WITHIN, |l| l.contains(" web-2"));
    s.kubectl_ok(&["scale", "sts/web", "--replicas=1"]);
    wait_for("web-2 and web-1 gone", WITHIN, || {
        let all = get_json(&s, &["pods", "-l", "app=web"]).map(|l| items(&l))?;
        let find = |n: &str| all.iter().find(|p| name(p) == n).cloned();
        let live = |p: &Option<Value>| {
            p.as_ref()
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
        };
        let (w0, w1, w2) = (find("web-0"), find("web-1"), find("web-2"));
        assert!(live(&w0), "web-0 must stay");
        assert!(
            live(&w1) || w2.is_none(),
            "web-1 went while web-2 was still there"
        );
        (w1.is_none() && w2.is_none()).then_some(())
    });
    watch.wait_for_line("web-1 deleted", WITHIN, |l| l.starts_with("DELETED web-1"));
    let lines = watch.lines();
    let going = |pod: &str| {
        lines
            .iter()
            .position(|l| {
                let mut f = l.split_whitespace();
                let (ty, name, marked) = (f.next(), f.next(), f.next());
                name == Some(pod) && (ty == Some("DELETED") || marked.is_some())
            })
            .unwrap_or_else(|| panic!("{pod} never went: {lines:#?}"))
    };
    let web2_gone = lines
        .iter()
        .position(|l| l.starts_with("DELETED web-2"))
        .unwrap_or_else(|| panic!("web-2 never went: {lines:#?}"));
    assert!(
        web2_gone < going("web-1"),
        "web-1 was marked before web-2 was gone: {lines:#?}"
    );
    assert!(going("web-2") < going("web-1"), "{lines:#?}");
    wait_for("one pod left", WITHIN, || {
        let st = sts_status(&s, "web");
        (pods(&s, "app=web").len() == 1 && st["replicas"] == 1 && st["readyReplicas"] == 1)
            .then_some(())
    });
    // Claims are retained on scale down (whenScaled: Retain, the default).
    let pvcs = s.kubectl_ok(&["get", "pvc", "-o", "name"]);
    assert!(pvcs.contains("www-web-2"), "{pvcs}");
    // A deleted pod comes back with the same name and claim.
    s.kubectl_ok(&["delete", "pod", "web-0", "--wait=false"]);
    wait_for("web-0 recreated and Ready", WITHIN, || {
        let ps = pods(&s, "app=web");
        (ps.len() == 1 && name(&ps[0]) == "web-0" && ready(&ps[0])).then_some(())
    });
}

#[test]
fn a_partitioned_rolling_update_updates_only_high_ordinals_and_rolls_back() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply_sts(
        &s,
        &sts_yaml(
            "db",
            3,
            "nginx:1.27",
            "  podManagementPolicy: Parallel\n  updateStrategy:\n    rollingUpdate:\n      partition: 1\n",
        ),
    );
    wait_for("3 Ready pods", WITHIN, || {
        let ps = pods(&s, "app=db");
        (ps.len() == 3 && ps.iter().all(ready)).then_some(())
    });
    s.kubectl_ok(&["set", "image", "sts/db", "app=nginx:1.28"]);
    wait_for(
        "db-1 and db-2 on the new image, db-0 on the old",
        WITHIN,
        || {
            let ps = pods(&s, "app=db");
            let images: Vec<String> = ps.iter().map(image).collect();
            (ps.len() == 3
                && ps.iter().all(ready)
                && images == ["nginx:1.27", "nginx:1.28", "nginx:1.28"])
            .then_some(())
        },
    );
    let st = wait_for("2 updated replicas", WITHIN, || {
        let st = sts_status(&s, "db");
        (st["updatedReplicas"] == 2 && st["readyReplicas"] == 3).then_some(st)
    });
    assert_ne!(st["currentRevision"], st["updateRevision"]);
    let out = s.kubectl_ok(&["rollout", "status", "sts/db", "--timeout=20s"]);
    assert!(
        out.contains("partitioned roll out complete: 2 new pods have been updated"),
        "{out}"
    );
    // Held at the partition: db-0 stays old.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(image(&pods(&s, "app=db")[0]), "nginx:1.27");

    // Partition 0: the rest follows, and the update revision becomes current.
    s.kubectl_ok(&[
        "patch",
        "sts/db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let st = wait_for("all updated and current", WITHIN, || {
        let st = sts_status(&s, "db");
        let ps = pods(&s, "app=db");
        (ps.len() == 3
            && ps.iter().all(|p| ready(p) && image(p) == "nginx:1.28")
            && st["currentRevision"] == st["updateRevision"]
            && st["currentReplicas"] == 3)
            .then_some(st)
    });
    assert_eq!(st["updatedReplicas"], 3);
    let hist = s.kubectl_ok(&["rollout", "history", "sts/db"]);
    assert!(
        hist.contains("REVISION") && hist.contains("\n1 ") && hist.contains("\n2 "),
        "{hist}"
    );

    // Undo returns to the first template (its revision renumbered as the newest).
    let out = s.kubectl_ok(&["rollout", "undo", "sts/db"]);
    assert!(out.contains("statefulset.apps/db rolled back"), "{out}");
    wait_for("all back on the old image", WITHIN, || {
        let ps = pods(&s, "app=db");
        (ps.len() == 3 && ps.iter().all(|p| ready(p) && image(p) == "nginx:1.27")).then_some(())
    });
    let hist = s.kubectl_ok(&["rollout", "history", "sts/db"]);
    assert!(
        hist.contains("\n2 ") && hist.contains("\n3 ") && !hist.contains("\n1 "),
        "{hist}"
    );
    let out = s.kubectl_ok(&["rollout", "status", "sts/db", "--timeout=20s"]);
    assert!(out.contains("3 new pods have been updated"), "{out}");

    // Restart: every pod is replaced by one carrying the restart annotation.
    let out = s.kubectl_ok(&["rollout", "restart", "sts/db"]);
    assert!(out.contains("statefulset.apps/db restarted"), "{out}");
    wait_for("all pods restarted", WITHIN, || {
        let ps = pods(&s, "app=db");
        (ps.len() == 3
            && ps.iter().all(|p| {
                ready(p)
                    && p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
            }))
        .then_some(())
    });
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ds_pods_by_node(s: &Server) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pods(s, "app=agent")
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                image(p),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemonset_runs_on_each_eligible_node_follows_nodes_and_rolls() {
    let s = Server::start_args(&["--simulated-nodes", "3"]);
    wait_for("3 nodes", WITHIN, || {
        (s.kubectl_ok(&["get", "nodes", "-o", "name"])
            .lines()
            .count()
            == 3)
            .then_some(())
    });
    s.kubectl_ok(&["taint", "nodes", "sim-node-2", "dedicated=infra:NoSchedule"]);
    apply(
        &s,
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  updateStrategy:
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: agent
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: busybox:1.36
"#,
    );
    wait_for("daemons on the two untainted nodes", WITHIN, || {
        let got = ds_pods_by_node(&s);
        (got.len() == 2
            && got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                == ["sim-node-0", "sim-node-1"]
            && pods(&s, "app=agent").iter().all(ready))
        .then_some(())
    });
    let st = wait_for("status counts 2", WITHIN, || {
        let st = get_json(&s, &["ds", "agent"])?["status"].clone();
        (st["numberReady"] == 2 && st["numberAvailable"] == 2).then_some(st)
    });
    assert_eq!(st["desiredNumberScheduled"], 2);
    assert_eq!(st["currentNumberScheduled"], 2);
    assert_eq!(st["updatedNumberScheduled"], 2);
    assert_eq!(st["numberMisscheduled"], 0);
    let p = &pods(&s, "app=agent")[0];
    assert!(
        p["metadata"]["labels"]["controller-revision-hash"].is_string(),
        "{p}"
    );
    assert_eq!(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["key"],
        "metadata.name"
    );
    let tolerations = p["spec"]["tolerations"].to_string();
    for t in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/disk-pressure",
    ] {
        assert!(tolerations.contains(t), "{tolerations}");
    }
    let out = s.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=20s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );

    // The taint goes: the daemon follows onto that node.
    s.kubectl_ok(&["taint", "nodes", "sim-node-2", "dedicated-"]);
    wait_for("a daemon on sim-node-2", WITHIN, || {
        (ds_pods_by_node(&s).len() == 3).then_some(())
    });
    // A new node joins: it gets a daemon too.
    let _agent = Agent(
        Command::new(capstan_e2e::capstan_bin())
            .args([
                "agent",
                "--simulate",
                "1",
                "--node-prefix",
                "extra",
                "--kubeconfig",
            ])
            .arg(s.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn capstan agent"),
    );
    wait_for("a daemon on the new node", WITHIN, || {
        let got = ds_pods_by_node(&s);
        (got.len() == 4
            && got.iter().any(|(n, _)| n == "extra-0")
            && pods(&s, "app=agent").iter().all(ready))
        .then_some(())
    });
    // A node labelled out of the selector loses its daemon.
    s.kubectl_ok(&["label", "nodes", "sim-node-0", "daemon=no"]);
    s.kubectl_ok(&[
        "patch", "ds/agent", "-p",
        r#"{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"daemon","operator":"NotIn","values":["no"]}]}]}}}}}}}"#,
    ]);
    // That was also a template change: a rolling update, one node at a time.
    let mut max_unavailable_seen = 0;
    wait_for(
        "daemons on the 3 selected nodes, all updated",
        WITHIN,
        || {
            let st = get_json(&s, &["ds", "agent"])?["status"].clone();
            let unavailable = st["desiredNumberScheduled"].as_i64().unwrap_or(0)
                - st["numberAvailable"].as_i64().unwrap_or(0);
            max_unavailable_seen = max_unavailable_seen.max(unavailable);
            let got = ds_pods_by_node(&s);
            (got.len() == 3
                && !got.iter().any(|(n, _)| n == "sim-node-0")
                && st["updatedNumberScheduled"] == 3
                && st["numberAvailable"] == 3
                && st["desiredNumberScheduled"] == 3)
                .then_some(())
        },
    );
    assert!(
        max_unavailable_seen <= 1,
        "maxUnavailable 1 was exceeded: {max_unavailable_seen}"
    );
    s.kubectl_ok(&["set", "image", "ds/agent", "app=busybox:1.37"]);
    let out = s.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=25s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let got = ds_pods_by_node(&s);
    assert!(got.iter().all(|(_, i)| i == "busybox:1.37"), "{got:?}");
    let hist = s.kubectl_ok(&["rollout", "history", "ds/agent"]);
    assert!(hist.contains("\n3 "), "{hist}");
}

#[test]
fn a_daemonset_with_max_surge_starts_the_new_pod_before_stopping_the_old() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply(
        &s,
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  updateStrategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: agent
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: busybox:1.36
        readinessProbe:
          exec:
            command: ["true"]
          initialDelaySeconds: 1
"#,
    );
    wait_for("2 ready daemons", WITHIN, || {
        let ps = pods(&s, "app=agent");
        (ps.len() == 2 && ps.iter().all(ready)).then_some(())
    });
    s.kubectl_ok(&["set", "image", "ds/agent", "app=busybox:1.37"]);
    let mut max_pods = 0;
    wait_for("both nodes on the new image", WITHIN, || {
        let ps = pods(&s, "app=agent");
        let readies = ps.iter().filter(|p| ready(p)).count();
        max_pods = max_pods.max(ps.len());
        // Never fewer than 2 ready daemons (maxUnavailable 0), at most one extra.
        assert!(
            ps.len() <= 3,
            "more than maxSurge extra pods: {}: {:?}",
            ps.len(),
            ps.iter()
                .map(|p| (
                    name(p),
                    p["spec"]["nodeName"].clone(),
                    image(p),
                    ready(p),
                    p["metadata"]["creationTimestamp"].clone()
                ))
                .collect::<Vec<_>>()
        );
        assert!(
            readies >= 2,
            "a node was left without a ready daemon: {ps:?}"
        );
        (ps.len() == 2 && ps.iter().all(|p| ready(p) && image(p) == "busybox:1.37")).then_some(())
    });
    assert_eq!(max_pods, 3, "a surge pod ran beside the old one");
}

fn pdb_status(s: &Server, name: &str) -> Value {
    get_json(s, &["pdb", name])
        .map(|v| v["status"].clone())
        .unwrap_or_default()
}

fn eviction(pod: &str) -> String {
    format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}"}}}}"#)
}

async fn client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    // kube-rs retries 429s by default (until the budget allows it): see the refusal itself.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

fn claims(s: &Server) -> Vec<String> {
    let mut v: Vec<String> = s
        .kubectl_ok(&["get", "pvc", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("persistentvolumeclaim/").to_string())
        .collect();
    v.sort();
    v
}

/// `persistentVolumeClaimRetentionPolicy`: whenScaled Delete removes the claims of the
/// ordinals scaled away, whenDeleted Retain keeps the rest after the set; whenDeleted
/// Delete takes them with it.
#[test]
fn claim_retention_policy_on_scale_down_and_deletion() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply_sts(
        &s,
        &sts_yaml(
            "keep",
            2,
            "nginx:1.27",
            "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}\n",
        ),
    );
    wait_for("two ready pods", WITHIN, || {
        (sts_status(&s, "keep")["readyReplicas"] == 2).then_some(())
    });
    assert_eq!(claims(&s), ["www-keep-0", "www-keep-1"]);
    s.kubectl_ok(&["scale", "sts", "keep", "--replicas=1"]);
    wait_for("the scaled-away ordinal's claim gone", WITHIN, || {
        (claims(&s) == ["www-keep-0"]).then_some(())
    });
    s.kubectl_ok(&["delete", "sts", "keep"]);
    wait_for("the set's pods gone", WITHIN, || {
        pods(&s, "app=keep").is_empty().then_some(())
    });
    assert_eq!(claims(&s), ["www-keep-0"], "whenDeleted: Retain");

    apply(
        &s,
        &sts_yaml(
            "drop",
            2,
            "nginx:1.27",
            "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Retain, whenDeleted: Delete}\n",
        ),
    );
    wait_for("two ready drop pods", WITHIN, || {
        (sts_status(&s, "drop")["readyReplicas"] == 2).then_some(())
    });
    s.kubectl_ok(&["scale", "sts", "drop", "--replicas=1"]);
    wait_for("one drop pod", WITHIN, || {
        (pods(&s, "app=drop").len() == 1).then_some(())
    });
    assert_eq!(
        claims(&s),
        ["www-drop-0", "www-drop-1", "www-keep-0"],
        "whenScaled: Retain"
    );
    s.kubectl_ok(&["delete", "sts", "drop"]);
    wait_for("the set's claims gone with it", WITHIN, || {
        (claims(&s) == ["www-keep-0"]).then_some(())
    });
}

/// A CRD kind with (or, `scaled` false, without) the scale subresource.
fn crd_yaml(plural: &str, kind: &str, scaled: bool) -> String {
    let sub = if scaled {
        "    subresources:\n      status: {}\n      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.example.com}}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {{plural: {plural}, singular: {kind_l}, kind: {kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n{sub}    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
        kind_l = kind.to_lowercase()
    )
}

/// A pod on a simulated node controlled by `kind`/`name` (uid `uid`) of example.com/v1.
fn owned_pod(pod: &str, app: &str, kind: &str, name: &str, uid: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  labels: {{app: {app}}}\n  ownerReferences: [{{apiVersion: example.com/v1, kind: {kind}, name: {name}, uid: {uid}, controller: true}}]\nspec:\n  containers: [{{name: c, image: nginx}}]\n"
    )
}

/// Upstream's getScaleController: pods controlled by a custom resource count by its
/// `/scale` replicas; a kind without the subresource makes the budget fail safe.
#[test]
fn a_budget_over_a_custom_resource_reads_its_scale() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply(&s, &crd_yaml("widgets", "Widget", true));
    apply(&s, &crd_yaml("gadgets", "Gadget", false));
    wait_for("the CRDs served", WITHIN, || {
        (s.kubectl(&["get", "widgets"]).status.success()
            && s.kubectl(&["get", "gadgets"]).status.success())
        .then_some(())
    });
    apply(
        &s,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {replicas: 4}\n",
    );
    let uid = get_json(&s, &["widget", "w"]).expect("widget")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for i in 0..3 {
        apply(
            &s,
            &owned_pod(&format!("w-{i}"), "widget", "Widget", "w", &uid),
        );
    }
    apply(
        &s,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: widgets}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: widget}}\n",
    );
    // Expected from the Widget's scale (4), not from the 3 pods: 3 healthy of 3 desired.
    let st = wait_for("the budget to count 3 healthy", WITHIN, || {
        let st = pdb_status(&s, "widgets");
        (st["currentHealthy"] == 3).then_some(st)
    });
    assert_eq!(st["expectedPods"], 4, "{st}");
    assert_eq!(st["desiredHealthy"], 3, "{st}");
    assert_eq!(st["disruptionsAllowed"], 0, "{st}");
    // Scaled through /scale: the next sync (here the next pod change, as an operator
    // acting on the scale would make) reads it again.
    s.kubectl_ok(&["scale", "widget", "w", "--replicas=3"]);
    s.kubectl_ok(&["label", "pod", "w-0", "seen=again"]);
    let st = wait_for("the budget to follow the scale", WITHIN, || {
        let st = pdb_status(&s, "widgets");
        (st["expectedPods"] == 3).then_some(st)
    });
    assert_eq!(st["disruptionsAllowed"], 1, "{st}");

    apply(
        &s,
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\nspec: {replicas: 1}\n",
    );
    let guid = get_json(&s, &["gadget", "g"]).expect("gadget")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    apply(&s, &owned_pod("g-0", "gadget", "Gadget", "g", &guid));
    apply(
        &s,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: gadgets}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: gadget}}\n",
    );
    let cond = wait_for("SyncFailed on the gadget budget", WITHIN, || {
        let st = pdb_status(&s, "gadgets");
        let c = st["conditions"][0].clone();
        (c["reason"] == "SyncFailed").then_some(c)
    });
    assert_eq!(cond["status"], "False");
    assert_eq!(
        cond["message"],
        "gadgets.example.com does not implement the scale subresource"
    );
}

#[test]
fn a_disruption_budget_reports_and_guards_evictions_and_drain() {
    let s = Server::start_args(&["--simulated-nodes", "3"]);
    apply_sts(
        &s,
        &sts_yaml("web", 3, "nginx:1.27", "  podManagementPolicy: Parallel\n"),
    );
    apply(
        &s,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  maxUnavailable: 0\n  selector:\n    matchLabels:\n      app: web\n",
    );
    let st = wait_for("the budget to count 3 healthy", WITHIN, || {
        let st = pdb_status(&s, "web");
        (st["currentHealthy"] == 3).then_some(st)
    });
    assert_eq!(st["expectedPods"], 3);
    assert_eq!(st["desiredHealthy"], 3);
    assert_eq!(st["disruptionsAllowed"], 0);
    assert_eq!(st["observedGeneration"], 1);
    let cond = &st["conditions"][0];
    assert_eq!(cond["type"], "DisruptionAllowed");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "InsufficientPods");
    let table = s.kubectl_ok(&["get", "pdb", "web"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(3) == Some("0")),
        "{table}"
    );

    // An eviction that would break the budget: 429 with the DisruptionBudget cause.
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-0/eviction",
            "-f",
            "-",
        ],
        &eviction("web-0"),
    );
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    // kubectl drain uses evictions, and waits on the budget until its timeout.
    let node = get_json(&s, &["pod", "web-0"]).expect("web-0")["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = s.kubectl(&[
        "drain",
        &node,
        "--pod-selector",
        "statefulset.kubernetes.io/pod-name=web-0",
        "--ignore-daemonsets",
        "--timeout=3s",
    ]);
    let (stdout, err) = capstan_e2e::text(&out);
    assert!(!out.status.success(), "{stdout}{err}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert!(get_json(&s, &["pod", "web-0"]).is_some_and(|p| ready(&p)));

    // One disruption allowed: drain evicts the pod, and the budget is spent at once.
    s.kubectl_ok(&[
        "patch",
        "pdb/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":1}}"#,
    ]);
    wait_for("one disruption allowed", WITHIN, || {
        let st = pdb_status(&s, "web");
        (st["disruptionsAllowed"] == 1 && st["observedGeneration"] == 2).then_some(())
    });
    let out = s.kubectl(&[
        "drain",
        &node,
        "--pod-selector",
        "statefulset.kubernetes.io/pod-name=web-0",
        "--ignore-daemonsets",
        "--timeout=20s",
    ]);
    let (stdout, err) = capstan_e2e::text(&out);
    assert!(out.status.success(), "{stdout}{err}");
    let out = format!("{stdout}{err}");
    assert!(out.contains("pod/web-0 evicted"), "{out}");
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    // web-0 comes back on another node (this one is cordoned); until it is Ready the
    // budget allows nothing more.
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-1/eviction",
            "-f",
            "-",
        ],
        &eviction("web-1"),
    );
    if !out.status.success() {
        let (_, err) = capstan_e2e::text(&out);
        assert!(err.contains("disruption budget"), "{err}");
    }
    s.kubectl_ok(&["uncordon", &node]);
    wait_for("3 healthy again", WITHIN, || {
        let st = pdb_status(&s, "web");
        (st["currentHealthy"] == 3 && st["disruptionsAllowed"] == 1).then_some(())
    });

    // Two budgets for one pod: upstream's 500.
    apply(
        &s,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web2\nspec:\n  minAvailable: 50%\n  selector:\n    matchLabels:\n      app: web\n",
    );
    let st = wait_for("the percentage budget", WITHIN, || {
        let st = pdb_status(&s, "web2");
        (st["observedGeneration"] == 1).then_some(st)
    });
    assert_eq!(st["desiredHealthy"], 2, "50% of 3 rounds up");
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-2/eviction",
            "-f",
            "-",
        ],
        &eviction("web-2"),
    );
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains("This pod has more than one PodDisruptionBudget"),
        "{err}"
    );
    s.kubectl_ok(&["delete", "pdb", "web2"]);

    // kube-rs: Api::<Pod>::evict succeeds within the budget and is refused beyond it.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = client(&s).await;
        let api: Api<Pod> = Api::namespaced(c, "default");
        let st = api
            .evict("web-2", &EvictParams::default())
            .await
            .expect("evict web-2");
        assert_eq!(
            st.status,
            Some(kube::core::response::StatusSummary::Success)
        );
        let refused = api.evict("web-1", &EvictParams::default()).await;
        match refused {
            Err(kube::Error::Api(st)) => {
                assert_eq!(st.code, 429, "{st:?}");
                assert_eq!(st.reason, "TooManyRequests");
            }
            other => panic!("expected a 429, got {other:?}"),
        }
    });
}

#[test]
fn an_unprocessed_budget_refuses_evictions_and_pods_without_one_are_evicted() {
    // Without the disruption loop the budget is never observed: upstream's 429.
    let s = Server::start_args(&["--simulated-nodes", "1", "--controllers", "*,-disruption"]);
    apply_sts(
        &s,
        &sts_yaml("web", 2, "nginx:1.27", "  podManagementPolicy: Parallel\n"),
    );
    wait_for("2 Ready pods", WITHIN, || {
        let ps = pods(&s, "app=web");
        (ps.len() == 2 && ps.iter().all(ready)).then_some(())
    });
    apply(
        &s,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 0\n  selector:\n    matchLabels:\n      statefulset.kubernetes.io/pod-name: web-0\n",
    );
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-0/eviction",
            "-f",
            "-",
        ],
        &eviction("web-0"),
    );
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    // A mismatched name is a 400; a pod no budget selects is evicted outright.
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-1/eviction",
            "-f",
            "-",
        ],
        &eviction("web-0"),
    );
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains("name in URL does not match name in Eviction object"),
        "{err}"
    );
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/web-1/eviction",
            "-f",
            "-",
        ],
        &eviction("web-1"),
    );
    let (stdout, err) = capstan_e2e::text(&out);
    assert!(out.status.success(), "{stdout}{err}");
    assert!(stdout.contains("\"status\":\"Success\""), "{stdout}");
    wait_for("web-1 replaced", WITHIN, || {
        let p = get_json(&s, &["pod", "web-1"])?;
        (p["metadata"]["deletionTimestamp"].is_null() && ready(&p)).then_some(())
    });
    // Discovery names the Eviction's group-version (what kubectl drain looks for).
    let raw = s.kubectl_ok(&["get", "--raw", "/api/v1"]);
    let v: Value = serde_json::from_str(&raw).expect("json");
    let ev = v["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "pods/eviction").cloned())
        .expect("pods/eviction listed");
    assert_eq!(ev["group"], "policy");
    assert_eq!(ev["version"], "v1");
    assert_eq!(ev["kind"], "Eviction");
}

#[test]
fn a_statefulset_that_cannot_create_its_pod_says_why_and_recovers() {
    let s = Server::start_args(&["--simulated-nodes", "1", "--sets-backoff-base-ms", "200"]);
    let yaml = sts_yaml("web", 1, "nginx:1.27", "").replace(
        "      terminationGracePeriodSeconds: 1\n",
        "      terminationGracePeriodSeconds: 1\n      priorityClassName: urgent\n",
    );
    apply_sts(&s, &yaml);
    let cond = wait_for("the ReplicaFailure condition after retries", WITHIN, || {
        let st = sts_status(&s, "web");
        let c = st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure").cloned())?;
        c["message"]
            .as_str()
            .and_then(capstan_e2e::attempt_in)
            .is_some_and(|n| n >= 3)
            .then_some(c)
    });
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "FailedCreate");
    let msg = cond["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("create Pod web-0 in StatefulSet web failed"),
        "{msg}"
    );
    assert!(
        msg.contains("no PriorityClass with name urgent was found"),
        "{msg}"
    );
    assert!(msg.contains("next attempt in"), "{msg}");
    // One Event, counted, not one per retry.
    let events =
        get_json(&s, &["events", "--field-selector", "reason=FailedCreate"]).expect("events");
    let evs = items(&events);
    assert_eq!(evs.len(), 1, "{events}");
    assert!(evs[0]["count"].as_i64().unwrap_or(0) >= 2, "{events}");
    // The cause goes away: the pod is made and the condition cleared.
    apply(&s, "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: urgent\nvalue: 1000\n");
    wait_for("web-0 Ready and the condition gone", WITHIN, || {
        let st = sts_status(&s, "web");
        let failing = st["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "ReplicaFailure"));
        (!failing && st["readyReplicas"] == 1).then_some(())
    });
}
