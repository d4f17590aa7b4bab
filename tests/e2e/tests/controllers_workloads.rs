//! The ReplicaSet, ReplicationController and Deployment loops through kubectl and kube-rs
//! against the binary with simulated nodes: pods converge, rolling updates keep their
//! availability budget, revisions, undo, scale, pause, Recreate, adoption, ReplicaFailure.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_e2e::kube_client as client;
use capstan_e2e::Server;
use capstan_e2e::{apply, get_json, wait_for};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

fn server() -> Server {
    Server::start_args(&["--simulated-nodes", "3"])
}

/// Poll `f` until it returns Some, or fail naming what was awaited.
fn condition<'a>(obj: &'a Value, ty: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True"
}

/// Live (not terminating) pods with `selector`, and how many of them are Running/Ready.
fn pods(s: &Server, selector: &str) -> Vec<Value> {
    get_json(s, &["pods", "-l", selector])
        .map(|v| items(&v))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn wait_running(s: &Server, selector: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} running pods {selector}"), WITHIN, || {
        let p = pods(s, selector);
        (p.len() == n
            && p.iter()
                .all(|p| p["status"]["phase"] == "Running" && is_ready(p)))
        .then_some(p)
    })
}

fn rollout_status(s: &Server, what: &str) -> String {
    s.kubectl_ok(&["rollout", "status", what, "--timeout=30s"])
}

fn replica_sets(s: &Server, selector: &str) -> Vec<Value> {
    get_json(s, &["rs", "-l", selector])
        .map(|v| items(&v))
        .unwrap_or_default()
}

fn annotation(obj: &Value, name: &str) -> String {
    obj["metadata"]["annotations"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Sample, until stopped, the fewest ready pods with `selector` seen at any moment.
struct Sampler {
    stop: Arc<AtomicBool>,
    min: Arc<AtomicI64>,
    samples: Arc<AtomicI64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(kubeconfig: std::path::PathBuf, selector: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(AtomicI64::new(i64::MAX));
        let samples = Arc::new(AtomicI64::new(0));
        let (st, mn, sa, sel) = (
            stop.clone(),
            min.clone(),
            samples.clone(),
            selector.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let out = std::process::Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .args(["get", "pods", "-l", &sel, "-o", "json"])
                    .output();
                if let Ok(out) = out {
                    if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                        let ready = items(&v).iter().filter(|p| is_ready(p)).count() as i64;
                        mn.fetch_min(ready, Ordering::SeqCst);
                        sa.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        // The first sample is the state before the change under test.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while samples.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the sampler never sampled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sampler {
            stop,
            min,
            samples,
            thread: Some(thread),
        }
    }

    /// (fewest ready pods seen, samples taken)
    fn finish(mut self) -> (i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.min.load(Ordering::SeqCst),
            self.samples.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn a_deployment_rolls_out_updates_within_budget_and_undoes() {
    let s = server();
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    wait_running(&s, "app=web", 3);
    let out = rollout_status(&s, "deployment/web");
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let get = s.kubectl_ok(&["get", "deploy", "web"]);
    let line = get.lines().nth(1).unwrap_or_default().to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..4], ["web", "3/3", "3", "3"], "{get}");
    let d = get_json(&s, &["deploy", "web"]).expect("deployment");
    assert_eq!(condition(&d, "Available")["status"], "True", "{d}");
    assert_eq!(
        condition(&d, "Available")["reason"],
        "MinimumReplicasAvailable"
    );
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "1");
    let rs1 = replica_sets(&s, "app=web");
    assert_eq!(rs1.len(), 1, "{rs1:?}");
    let rs1_name = rs1[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = rs1[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(rs1_name, format!("web-{hash}"));
    assert_eq!(
        annotation(&rs1[0], "deployment.kubernetes.io/desired-replicas"),
        "3"
    );
    assert_eq!(
        annotation(&rs1[0], "deployment.kubernetes.io/max-replicas"),
        "4"
    );
    for p in pods(&s, "app=web") {
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["name"],
            rs1_name.as_str()
        );
    }

    // A rolling update: 25% of 3 is maxSurge 1, maxUnavailable 0 -> never fewer than 3 ready.
    let sampler = Sampler::start(s.kubeconfig(), "app=web");
    s.kubectl_ok(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    let out = rollout_status(&s, "deployment/web");
    assert!(out.contains("successfully rolled out"), "{out}");
    let (min_ready, samples) = sampler.finish();
    // One sample before `set image` (see Sampler::start), at least one during or after it.
    assert!(samples >= 2, "too few samples: {samples}");
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} during the rollout"
    );
    let running = wait_running(&s, "app=web", 3);
    for p in &running {
        assert_eq!(p["spec"]["containers"][0]["image"], "busybox:1.36");
    }
    let d = get_json(&s, &["deploy", "web"]).expect("deployment");
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "2");
    assert_eq!(d["status"]["updatedReplicas"], 3);
    let rss = replica_sets(&s, "app=web");
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == rs1_name.as_str())
        .expect("old replica set kept for history");
    assert_eq!(old["spec"]["replicas"], 0);

    let history = s.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION"), "{history}");
    let revs: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revs, ["1", "2"], "{history}");

    // Undo: the first ReplicaSet comes back as revision 3.
    let out = s.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let out = rollout_status(&s, "deployment/web");
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs = wait_for("the first replica set back at 3 replicas", WITHIN, || {
        get_json(&s, &["rs", &rs1_name]).filter(|r| r["status"]["readyReplicas"] == 3)
    });
    assert_eq!(annotation(&rs, "deployment.kubernetes.io/revision"), "3");
    assert_eq!(
        annotation(&rs, "deployment.kubernetes.io/revision-history"),
        "1"
    );
    for p in wait_running(&s, "app=web", 3) {
        assert_eq!(p["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    }
    let history = s.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let revs: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revs, ["2", "3"], "{history}");

    // Scale up and down.
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    wait_running(&s, "app=web", 5);
    rollout_status(&s, "deployment/web");
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=2"]);
    wait_running(&s, "app=web", 2);
    let d = wait_for("status of 2 replicas", WITHIN, || {
        get_json(&s, &["deploy", "web"]).filter(|d| d["status"]["availableReplicas"] == 2)
    });
    assert_eq!(d["status"]["replicas"], 2, "{d}");

    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("ScalingReplicaSet"), "{events}");
    assert!(
        events.contains(&format!("Scaled up replica set {rs1_name} from 0 to 3")),
        "{events}"
    );
}

#[test]
fn pause_resume_and_restart_make_revisions_only_when_resumed() {
    let s = server();
    s.kubectl_ok(&[
        "create",
        "deployment",
        "api",
        "--image=nginx",
        "--replicas=2",
    ]);
    rollout_status(&s, "deployment/api");
    s.kubectl_ok(&["rollout", "pause", "deployment/api"]);
    s.kubectl_ok(&["set", "image", "deployment/api", "nginx=nginx:1.27"]);
    let d = wait_for("the Progressing condition to say paused", WITHIN, || {
        get_json(&s, &["deploy", "api"])
            .filter(|d| condition(d, "Progressing")["reason"] == "DeploymentPaused")
    });
    assert_eq!(condition(&d, "Progressing")["status"], "Unknown");
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    // Observed while paused, and still one ReplicaSet.
    assert_eq!(replica_sets(&s, "app=api").len(), 1);
    s.kubectl_ok(&["rollout", "resume", "deployment/api"]);
    let out = rollout_status(&s, "deployment/api");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(replica_sets(&s, "app=api").len(), 2);
    for p in wait_running(&s, "app=api", 2) {
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.27");
    }
    s.kubectl_ok(&["rollout", "restart", "deployment/api"]);
    let out = rollout_status(&s, "deployment/api");
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = get_json(&s, &["deploy", "api"]).expect("deployment");
    assert!(
        !annotation(&d["spec"]["template"], "kubectl.kubernetes.io/restartedAt").is_empty(),
        "{d}"
    );
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "3");
    assert_eq!(replica_sets(&s, "app=api").len(), 3);
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let s = server();
    apply(
        &s,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: rc8\nspec:\n  replicas: 2\n  strategy:\n    type: Recreate\n  selector:\n    matchLabels: {app: rc8}\n  template:\n    metadata:\n      labels: {app: rc8}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: nginx:1.26\n",
    );
    rollout_status(&s, "deployment/rc8");
    let old_hash = wait_running(&s, "app=rc8", 2)[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Sample: never an old and a new pod alive together.
    let kc = s.kubeconfig();
    let stop = Arc::new(AtomicBool::new(false));
    let overlap = Arc::new(AtomicBool::new(false));
    let (st, ov, oh) = (stop.clone(), overlap.clone(), old_hash.clone());
    let sampler = std::thread::spawn(move || {
        let mut n = 0;
        while !st.load(Ordering::SeqCst) {
            let out = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &kc)
                .args(["get", "pods", "-l", "app=rc8", "-o", "json"])
                .output();
            if let Ok(Ok(v)) = out.map(|o| serde_json::from_slice::<Value>(&o.stdout)) {
                let hashes: Vec<String> = items(&v)
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .filter_map(|p| {
                        p["metadata"]["labels"]["pod-template-hash"]
                            .as_str()
                            .map(String::from)
                    })
                    .collect();
                if hashes.contains(&oh) && hashes.iter().any(|h| *h != oh) {
                    ov.store(true, Ordering::SeqCst);
                }
                n += 1;
            }
        }
        n
    });
    s.kubectl_ok(&["set", "image", "deployment/rc8", "app=nginx:1.27"]);
    let out = rollout_status(&s, "deployment/rc8");
    assert!(out.contains("successfully rolled out"), "{out}");
    let new = wait_running(&s, "app=rc8", 2);
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap_or(0);
    assert!(samples >= 2, "{samples} samples");
    assert!(
        !overlap.load(Ordering::SeqCst),
        "old and new pods ran together"
    );
    for p in new {
        assert_ne!(
            p["metadata"]["labels"]["pod-template-hash"],
            old_hash.as_str()
        );
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.27");
    }
}

#[test]
fn a_replica_set_adopts_orphans_and_releases_relabelled_pods() {
    let s = server();
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels: {app: orph}\nspec:\n  containers:\n  - name: app\n    image: nginx\n",
    );
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: orph\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: orph}\n  template:\n    metadata:\n      labels: {app: orph}\n    spec:\n      containers:\n      - name: app\n        image: nginx\n",
    );
    let running = wait_running(&s, "app=orph", 2);
    let stray = running
        .iter()
        .find(|p| p["metadata"]["name"] == "stray")
        .expect("the orphan is one of the two");
    assert_eq!(
        stray["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    assert_eq!(stray["metadata"]["ownerReferences"][0]["name"], "orph");
    assert_eq!(stray["metadata"]["ownerReferences"][0]["controller"], true);
    let rs = wait_for("status of 2 ready", WITHIN, || {
        get_json(&s, &["rs", "orph"]).filter(|r| r["status"]["readyReplicas"] == 2)
    });
    assert_eq!(rs["status"]["replicas"], 2);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 2);
    assert_eq!(rs["status"]["availableReplicas"], 2);
    assert_eq!(rs["status"]["observedGeneration"], 1);

    // Relabelled: released (no owner) and replaced.
    s.kubectl_ok(&["label", "pod", "stray", "app=gone", "--overwrite"]);
    let released = wait_for("the relabelled pod released", WITHIN, || {
        get_json(&s, &["pod", "stray"]).filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
        })
    });
    assert_eq!(released["metadata"]["labels"]["app"], "gone");
    let now = wait_running(&s, "app=orph", 2);
    assert!(now.iter().all(|p| p["metadata"]["name"] != "stray"));

    // Scale down removes the newest/least ready first and keeps the count.
    s.kubectl_ok(&["scale", "rs", "orph", "--replicas=1"]);
    wait_running(&s, "app=orph", 1);
}

/// A ReplicaSet made by hand that a settled Deployment's selector picks is adopted as soon as
/// it appears (upstream's addReplicaSet), not at the Deployment's next change, and as an old
/// ReplicaSet it is scaled down.
#[test]
fn a_deployment_adopts_an_orphan_replica_set_when_it_appears() {
    let s = server();
    apply(
        &s,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: adopter\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: adopter}\n  template:\n    metadata:\n      labels: {app: adopter}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: nginx:1.27\n",
    );
    rollout_status(&s, "deployment/adopter");
    let uid = get_json(&s, &["deployment", "adopter"]).expect("deployment")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: stray-rs\n  labels: {app: adopter}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: adopter, stray: \"yes\"}\n  template:\n    metadata:\n      labels: {app: adopter, stray: \"yes\"}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: nginx:1.26\n",
    );
    let rs = wait_for(
        "the orphan ReplicaSet adopted and scaled down",
        WITHIN,
        || {
            get_json(&s, &["rs", "stray-rs"]).filter(|r| {
                r["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
                    && r["spec"]["replicas"] == 0
            })
        },
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    // The Deployment's own pod is untouched.
    wait_running(&s, "app=adopter,stray!=yes", 1);
}

#[test]
fn a_refused_replica_set_shows_replica_failure_and_recovers() {
    let s = server();
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: bad\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: bad}\n  template:\n    metadata:\n      labels: {app: bad}\n    spec:\n      priorityClassName: no-such-class\n      containers:\n      - name: app\n        image: nginx\n",
    );
    let rs = wait_for("ReplicaFailure on the replica set", WITHIN, || {
        get_json(&s, &["rs", "bad"]).filter(|r| condition(r, "ReplicaFailure")["status"] == "True")
    });
    let c = condition(&rs, "ReplicaFailure");
    assert_eq!(c["reason"], "FailedCreate");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("no PriorityClass with name no-such-class was found"),
        "{msg}"
    );
    assert!(
        capstan_e2e::attempt_in(msg).is_some_and(|n| n >= 1),
        "{msg}"
    );
    assert!(msg.contains("next attempt in"), "{msg}");
    // Retried on its own with back-off; the attempts show.
    let rs = wait_for("a second attempt", WITHIN, || {
        get_json(&s, &["rs", "bad"]).filter(|r| {
            condition(r, "ReplicaFailure")["message"]
                .as_str()
                .and_then(capstan_e2e::attempt_in)
                .is_some_and(|n| n >= 2)
        })
    });
    assert!(rs["status"]["replicas"] == 0 || rs["status"]["replicas"].is_null());
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=bad",
    ]);
    assert!(events.contains("FailedCreate"), "{events}");
    assert!(
        events.contains("Error creating: pods") && events.contains("no-such-class"),
        "{events}"
    );
    // One aggregated Event, not one per retry.
    assert_eq!(
        events
            .lines()
            .filter(|l| l.contains("FailedCreate"))
            .count(),
        1,
        "{events}"
    );
    let describe = s.kubectl_ok(&["describe", "rs", "bad"]);
    assert!(describe.contains("ReplicaFailure"), "{describe}");

    // Fix the template: creates succeed at once and the condition goes away.
    s.kubectl_ok(&[
        "patch",
        "rs",
        "bad",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/template/spec/priorityClassName"}]"#,
    ]);
    wait_running(&s, "app=bad", 2);
    let rs = wait_for("ReplicaFailure cleared", WITHIN, || {
        get_json(&s, &["rs", "bad"]).filter(|r| {
            condition(r, "ReplicaFailure").is_null() && r["status"]["readyReplicas"] == 2
        })
    });
    assert_eq!(rs["status"]["observedGeneration"], 2);

    // Refused by a quota: the condition carries upstream's quota message; raising the
    // quota is noticed at once, not at the next back-off tick, with nothing done to the RS.
    s.kubectl_ok(&["create", "namespace", "quota"]);
    s.kubectl_ok(&["create", "quota", "q", "-n", "quota", "--hard=pods=1"]);
    wait_for("the quota's status", WITHIN, || {
        get_json(&s, &["quota", "q", "-n", "quota"]).filter(|q| q["status"]["hard"]["pods"] == "1")
    });
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: capped\n  namespace: quota\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: capped}\n  template:\n    metadata:\n      labels: {app: capped}\n    spec:\n      containers:\n      - name: app\n        image: nginx\n",
    );
    // Wait for a back-off long enough that only the quota watch can explain a quick recovery.
    let rs = wait_for(
        "ReplicaFailure with a long back-off",
        Duration::from_secs(60),
        || {
            get_json(&s, &["rs", "capped", "-n", "quota"]).filter(|r| {
                condition(r, "ReplicaFailure")["message"]
                    .as_str()
                    .and_then(capstan_e2e::attempt_in)
                    .is_some_and(|n| n >= 4)
            })
        },
    );
    let c = condition(&rs, "ReplicaFailure");
    assert_eq!(c["reason"], "FailedCreate");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(r#"pods "capped-" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{msg}"
    );
    assert!(msg.contains("next attempt in 8s"), "{msg}");
    let describe = s.kubectl_ok(&["describe", "rs", "capped", "-n", "quota"]);
    assert!(
        describe.contains("ReplicaFailure") && describe.contains("exceeded quota: q"),
        "{describe}"
    );
    let raised = std::time::Instant::now();
    s.kubectl_ok(&[
        "patch",
        "quota",
        "q",
        "-n",
        "quota",
        "-p",
        r#"{"spec":{"hard":{"pods":"3"}}}"#,
    ]);
    wait_for("all 3 replicas after the quota was raised", WITHIN, || {
        get_json(&s, &["rs", "capped", "-n", "quota"])
            .filter(|r| r["status"]["replicas"] == 3 && condition(r, "ReplicaFailure").is_null())
    });
    // Well before the 8 s back-off would have retried.
    assert!(
        raised.elapsed() < Duration::from_secs(6),
        "recovered only after {:?}",
        raised.elapsed()
    );
}

#[test]
fn a_deployment_past_its_progress_deadline_says_so() {
    let s = server();
    apply(
        &s,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: slow\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 2\n  selector:\n    matchLabels: {app: slow}\n  template:\n    metadata:\n      labels: {app: slow}\n    spec:\n      containers:\n      - name: app\n        image: nginx\n        readinessProbe:\n          initialDelaySeconds: 3600\n          httpGet: {path: /, port: 80}\n",
    );
    let d = wait_for("ProgressDeadlineExceeded", WITHIN, || {
        get_json(&s, &["deploy", "slow"])
            .filter(|d| condition(d, "Progressing")["reason"] == "ProgressDeadlineExceeded")
    });
    assert_eq!(condition(&d, "Progressing")["status"], "False");
    assert_eq!(condition(&d, "Available")["status"], "False");
    assert_eq!(
        condition(&d, "Available")["reason"],
        "MinimumReplicasUnavailable"
    );
    assert_eq!(d["status"]["unavailableReplicas"], 1);
    let out = s.kubectl(&["rollout", "status", "deployment/slow", "--timeout=10s"]);
    assert!(!out.status.success());
    let (_, err) = capstan_e2e::text(&out);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

#[test]
fn replication_controllers_and_min_ready_seconds() {
    let s = server();
    apply(
        &s,
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n  minReadySeconds: 4\n  selector: {app: legacy}\n  template:\n    metadata:\n      labels: {app: legacy}\n    spec:\n      containers:\n      - name: app\n        image: nginx\n",
    );
    wait_running(&s, "app=legacy", 2);
    let rc = wait_for("the RC ready but not yet available", WITHIN, || {
        get_json(&s, &["rc", "legacy"]).filter(|r| r["status"]["readyReplicas"] == 2)
    });
    let first = rc["status"]["availableReplicas"].as_i64().unwrap_or(0);
    assert!(first < 2, "available before minReadySeconds: {rc}");
    let rc = wait_for(
        "available after minReadySeconds",
        Duration::from_secs(15),
        || get_json(&s, &["rc", "legacy"]).filter(|r| r["status"]["availableReplicas"] == 2),
    );
    assert_eq!(rc["status"]["fullyLabeledReplicas"], 2);
    let pod = &pods(&s, "app=legacy")[0];
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    let get = s.kubectl_ok(&["get", "rc", "legacy"]);
    assert!(
        get.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()[1..4] == ["2", "2", "2"]),
        "{get}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_watcher_sees_a_deployment_become_available() {
    let s = server();
    let client = client(&s).await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kr"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "kr"}},
                 "template": {"metadata": {"labels": {"app": "kr"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("deployment");
    api.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let cfg = watcher::Config::default().fields("metadata.name=kr");
    let mut stream = watcher(api.clone(), cfg).applied_objects().boxed();
    let seen = tokio::time::timeout(WITHIN, async {
        while let Some(Ok(d)) = stream.next().await {
            let st = d.status.clone().unwrap_or_default();
            let available = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True");
            if available && st.available_replicas == Some(2) {
                return Some(d);
            }
        }
        None
    })
    .await
    .expect("Available within 30 s")
    .expect("watch ended");
    let st = seen.status.unwrap_or_default();
    assert_eq!(st.ready_replicas, Some(2));
    assert_eq!(st.updated_replicas, Some(2));
    assert_eq!(st.observed_generation, seen.metadata.generation);
}
