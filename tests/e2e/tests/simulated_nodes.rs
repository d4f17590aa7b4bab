//! Simulated nodes (`capstan server --simulated-nodes`, `capstan agent --simulate`) through
//! kubectl and kube-rs: registration as a kubelet does it, Lease heartbeats, stop/resume, and
//! the kubelet's part for bound pods (Running, IPs, readiness, exits, graceful deletion).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::kube_client as client;
use capstan_e2e::Server;
use capstan_e2e::{apply, get_json, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::Api;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

/// Poll `f` until it returns Some, or fail naming what was awaited.
fn pod_yaml(
    name: &str,
    node: &str,
    extra_meta: &str,
    extra_spec: &str,
    container_extra: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{extra_meta}spec:\n  nodeName: {node}\n{extra_spec}  containers:\n  - name: app\n    image: nginx:1.27\n{container_extra}"
    )
}

fn wait_phase(s: &Server, pod: &str, phase: &str) -> Value {
    wait_for(&format!("pod {pod} to be {phase}"), WITHIN, || {
        get_json(s, &["pod", pod]).filter(|p| p["status"]["phase"] == phase)
    })
}

fn condition<'a>(obj: &'a Value, ty: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

fn seconds(ts: &Value) -> i64 {
    // RFC 3339 "YYYY-MM-DDTHH:MM:SSZ": compare times of one day only by their clock part.
    let t = ts.as_str().unwrap_or_default();
    let clock = t.get(11..19).unwrap_or("00:00:00");
    let mut parts = clock.split(':').map(|p| p.parse::<i64>().unwrap_or(0));
    let (h, m, s) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    h * 3600 + m * 60 + s
}

#[test]
fn nodes_register_with_their_groups_labels_taints_and_capacity() {
    let s = Server::start_args(&[
        "--simulated-nodes",
        "2",
        "--node-group",
        "gpu:1 cpu=8 memory=64Gi pods=30 label=accelerator=nvidia instance-type=g4.large taint=dedicated=gpu:NoSchedule",
    ]);
    let wide = wait_for("three Ready nodes", WITHIN, || {
        let out = s.kubectl_ok(&["get", "nodes", "-o", "wide"]);
        (out.lines().filter(|l| l.contains(" Ready ")).count() == 3).then_some(out)
    });
    let header = wide.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ] {
        assert!(header.contains(col), "{header}");
    }
    for (name, ip) in [
        ("sim-node-0", "172.16.0.1"),
        ("sim-node-1", "172.16.0.2"),
        ("sim-node-gpu-0", "172.16.0.3"),
    ] {
        let line = wide
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{wide}"));
        assert!(line.contains(" Ready "), "{line}");
        assert!(line.contains("v1.33.0"), "{line}");
        assert!(line.contains(ip), "{line}");
        assert!(line.contains("capstan-sim://"), "{line}");
    }

    let describe = s.kubectl_ok(&["describe", "node", "sim-node-gpu-0"]);
    for want in [
        "accelerator=nvidia",
        "kubernetes.io/hostname=sim-node-gpu-0",
        "kubernetes.io/os=linux",
        "kubernetes.io/arch=amd64",
        "node.kubernetes.io/instance-type=g4.large",
        "dedicated=gpu:NoSchedule",
        "PodCIDR:                      10.128.2.0/24",
        "KubeletReady",
        "kubelet is posting ready status",
        "KubeletHasSufficientMemory",
        "KubeletHasNoDiskPressure",
        "KubeletHasSufficientPID",
        "Kubelet Version:            v1.33.0",
    ] {
        assert!(describe.contains(want), "{want:?} not in:\n{describe}");
    }
    let node = get_json(&s, &["node", "sim-node-gpu-0"]).expect("node");
    assert_eq!(
        node["status"]["capacity"],
        json!({"cpu": "8", "memory": "64Gi", "pods": "30", "ephemeral-storage": "100Gi"})
    );
    assert_eq!(node["status"]["allocatable"], node["status"]["capacity"]);
    assert_eq!(node["spec"]["podCIDRs"], json!(["10.128.2.0/24"]));
    assert_eq!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        10250
    );
    assert_eq!(
        node["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "172.16.0.3"}, {"type": "Hostname", "address": "sim-node-gpu-0"}])
    );
    let plain = get_json(&s, &["node", "sim-node-0"]).expect("node");
    assert_eq!(plain["status"]["capacity"]["cpu"], "32");
    assert!(plain["spec"]["taints"].is_null(), "{plain}");
    assert_eq!(plain["spec"]["podCIDR"], "10.128.0.0/24");
    // Conditions in the kubelet's order.
    let types: Vec<&str> = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    );
}

fn renew_time(s: &Server, node: &str) -> Option<String> {
    let out = s.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        node,
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|t| !t.is_empty())
}

#[test]
fn leases_renew_and_a_stopped_node_stops_until_resumed() {
    // Lease duration 4 s: renewed every second.
    let s = Server::start_args(&[
        "--simulated-nodes",
        "2",
        "--node-lease-duration-seconds",
        "4",
    ]);
    let first = wait_for("the lease", WITHIN, || renew_time(&s, "sim-node-0"));
    let lease = get_json(&s, &["lease", "-n", "kube-node-lease", "sim-node-0"]).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "sim-node-0");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["name"],
        "sim-node-0"
    );
    let node_uid = get_json(&s, &["node", "sim-node-0"]).expect("node")["metadata"]["uid"].clone();
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], node_uid);
    wait_for("the lease to renew", WITHIN, || {
        renew_time(&s, "sim-node-0").filter(|t| *t != first)
    });

    s.kubectl_ok(&[
        "annotate",
        "node",
        "sim-node-0",
        "sim.capstan.io/stopped=true",
    ]);
    // A pod bound to the stopped node is not started.
    apply(&s, &pod_yaml("on-stopped", "sim-node-0", "", "", ""));
    apply(&s, &pod_yaml("on-running", "sim-node-1", "", "", ""));
    wait_phase(&s, "on-running", "Running");
    // A renewal in flight when the annotation arrived may still land: let it settle, then
    // require no renewal over three renew intervals.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    let frozen = renew_time(&s, "sim-node-0").expect("lease");
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            renew_time(&s, "sim-node-0").as_deref(),
            Some(frozen.as_str()),
            "a stopped node renewed its lease"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The other node kept beating meanwhile.
    let other = renew_time(&s, "sim-node-1").expect("lease");
    wait_for("the running node to renew", WITHIN, || {
        renew_time(&s, "sim-node-1").filter(|t| *t != other)
    });
    let pod = get_json(&s, &["pod", "on-stopped"]).expect("pod");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert!(pod["status"]["podIP"].is_null(), "{pod}");

    s.kubectl_ok(&["annotate", "node", "sim-node-0", "sim.capstan.io/stopped-"]);
    wait_for("the resumed node to renew", WITHIN, || {
        renew_time(&s, "sim-node-0").filter(|t| *t != frozen)
    });
    let pod = wait_phase(&s, "on-stopped", "Running");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("10.128.0."),
        "{pod}"
    );
}

/// A pod at rest (Running, ready, nothing timed ahead) has no worker task of its own: the
/// simulator keeps its state and starts one again on a change. A node that resumes must
/// still report such pods afresh, as a kubelet that comes back does, so what the node
/// lifecycle controller wrote meanwhile (Ready=False) is put right.
#[test]
fn a_resumed_node_reports_its_resting_pods_afresh() {
    let s = Server::start_args(&["--simulated-nodes", "1"]);
    apply(&s, &pod_yaml("resting", "sim-node-0", "", "", ""));
    wait_phase(&s, "resting", "Running");
    wait_for("the pod Ready", WITHIN, || {
        get_json(&s, &["pod", "resting"]).filter(|p| condition(p, "Ready")["status"] == "True")
    });
    s.kubectl_ok(&[
        "annotate",
        "node",
        "sim-node-0",
        "sim.capstan.io/stopped=true",
    ]);
    // What the node lifecycle controller writes for the pods of a node gone silent.
    s.kubectl_ok(&[
        "patch",
        "pod",
        "resting",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"NodeNotReady"}]}}"#,
    ]);
    let pod = get_json(&s, &["pod", "resting"]).expect("pod");
    assert_eq!(condition(&pod, "Ready")["status"], "False", "{pod}");
    s.kubectl_ok(&["annotate", "node", "sim-node-0", "sim.capstan.io/stopped-"]);
    let pod = wait_for("the resumed node to report the pod Ready", WITHIN, || {
        get_json(&s, &["pod", "resting"]).filter(|p| condition(p, "Ready")["status"] == "True")
    });
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert!(condition(&pod, "Ready")["reason"].is_null(), "{pod}");
}

#[test]
fn a_bound_pod_runs_with_an_ip_from_its_nodes_cidr_and_is_ready_after_its_delay() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    wait_for("nodes", WITHIN, || get_json(&s, &["node", "sim-node-1"]));
    apply(
        &s,
        &pod_yaml(
            "web",
            "sim-node-1",
            "",
            "",
            "    readinessProbe:\n      initialDelaySeconds: 3\n      exec: {command: [\"true\"]}\n",
        ),
    );
    let pod = wait_phase(&s, "web", "Running");
    let ip = pod["status"]["podIP"].as_str().expect("podIP").to_string();
    assert!(
        ip.starts_with("10.128.1."),
        "{ip} is not in sim-node-1's 10.128.1.0/24"
    );
    assert_eq!(pod["status"]["podIPs"], json!([{"ip": ip}]));
    assert_eq!(pod["status"]["hostIP"], "172.16.0.2");
    assert!(pod["status"]["startTime"].is_string(), "{pod}");
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["name"], "app");
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["started"], true);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    assert!(
        cs["imageID"]
            .as_str()
            .unwrap_or_default()
            .starts_with("nginx@sha256:"),
        "{cs}"
    );
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap_or_default()
            .starts_with("containerd://"),
        "{cs}"
    );
    assert_eq!(
        condition(&pod, "PodReadyToStartContainers")["status"],
        "True"
    );
    assert_eq!(condition(&pod, "Initialized")["status"], "True");
    assert_eq!(condition(&pod, "PodScheduled")["status"], "True");

    let wide = s.kubectl_ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains(&ip) && wide.contains("sim-node-1"), "{wide}");
    // Not ready before the readiness probe's initial delay ...
    let ready = condition(&pod, "Ready").clone();
    if ready["status"] == "False" {
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(ready["message"], "containers with unready status: [app]");
    }
    let out = s.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    // ... and ready from it on: the transition is at least 3 s after the start.
    let pod = get_json(&s, &["pod", "web"]).expect("pod");
    let ready = condition(&pod, "Ready");
    assert_eq!(ready["status"], "True");
    assert!(ready["reason"].is_null(), "{ready}");
    let delay = seconds(&ready["lastTransitionTime"]) - seconds(&pod["status"]["startTime"]);
    assert!(
        (3..=4).contains(&delay.rem_euclid(86400)),
        "ready {delay}s after start: {pod}"
    );
    assert_eq!(condition(&pod, "ContainersReady")["status"], "True");
    let get = s.kubectl_ok(&["get", "pod", "web"]);
    assert!(get.contains("1/1") && get.contains("Running"), "{get}");

    // A pod bound through pods/binding runs too.
    apply(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: late}\nspec: {schedulerName: nobody, containers: [{name: c, image: busybox}]}\n");
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"late"},"target":{"apiVersion":"v1","kind":"Node","name":"sim-node-0"}}"#;
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/late/binding",
            "-f",
            "-",
        ],
        binding,
    );
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let pod = wait_phase(&s, "late", "Running");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("10.128.0."),
        "{pod}"
    );
}

#[test]
fn exit_annotations_end_pods_as_their_restart_policy_says() {
    let s = Server::start_args(&["--simulated-nodes", "1"]);
    wait_for("the node", WITHIN, || get_json(&s, &["node", "sim-node-0"]));
    let exit = |code: i32| {
        format!("  annotations:\n    sim.capstan.io/exit-after: 1s\n    sim.capstan.io/exit-code: \"{code}\"\n")
    };
    apply(
        &s,
        &pod_yaml(
            "done",
            "sim-node-0",
            &exit(0),
            "  restartPolicy: Never\n",
            "",
        ),
    );
    apply(
        &s,
        &pod_yaml(
            "broken",
            "sim-node-0",
            &exit(3),
            "  restartPolicy: Never\n",
            "",
        ),
    );
    apply(
        &s,
        &pod_yaml(
            "retry",
            "sim-node-0",
            &exit(1),
            "  restartPolicy: OnFailure\n",
            "",
        ),
    );
    apply(&s, &pod_yaml("forever", "sim-node-0", &exit(0), "", ""));

    let done = wait_phase(&s, "done", "Succeeded");
    let t = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed")),
        "{done}"
    );
    assert_eq!(condition(&done, "Ready")["reason"], "PodCompleted");
    let broken = wait_phase(&s, "broken", "Failed");
    let t = &broken["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error")),
        "{broken}"
    );
    assert_eq!(condition(&broken, "Ready")["reason"], "PodFailed");

    for pod in ["retry", "forever"] {
        let p = wait_for(&format!("{pod} to restart"), WITHIN, || {
            get_json(&s, &["pod", pod])
                .filter(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1))
        });
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
        assert!(last["exitCode"].is_i64(), "{p}");
    }
    let get = s.kubectl_ok(&["get", "pods"]);
    let line = |name: &str| {
        get.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("done").contains("Completed"), "{get}");
    assert!(line("broken").contains("Error"), "{get}");
    assert!(
        !line("retry")
            .split_whitespace()
            .nth(3)
            .unwrap_or("0")
            .starts_with('0'),
        "{get}"
    );
}

#[test]
fn graceful_deletion_removes_a_running_pod_after_its_grace_period() {
    let s = Server::start_args(&["--simulated-nodes", "1"]);
    wait_for("the node", WITHIN, || get_json(&s, &["node", "sim-node-0"]));
    apply(&s, &pod_yaml("web", "sim-node-0", "", "", ""));
    let pod = wait_phase(&s, "web", "Running");
    let uid = pod["metadata"]["uid"].clone();
    let started = Instant::now();
    s.kubectl_ok(&["delete", "pod", "web", "--grace-period=3", "--wait=false"]);
    let marked = get_json(&s, &["pod", "web"]).expect("the pod stays during its grace period");
    assert_eq!(marked["metadata"]["uid"], uid);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 3);
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    let get = s.kubectl_ok(&["get", "pod", "web"]);
    assert!(get.contains("Terminating"), "{get}");
    wait_for("the pod to be removed", WITHIN, || {
        let out = s.kubectl(&["get", "pod", "web"]);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
            .then_some(())
    });
    // deletionTimestamp has whole seconds: the pod lived at least 2 of its 3.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "removed after {:?}",
        started.elapsed()
    );

    // An unbound pod has nothing to stop: deleted at once, as upstream.
    apply(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\nspec: {schedulerName: nobody, containers: [{name: c, image: busybox}]}\n");
    s.kubectl_ok(&["delete", "pod", "nowhere", "--wait=false"]);
    let out = s.kubectl(&["get", "pod", "nowhere"]);
    assert!(!out.status.success(), "{:?}", capstan_e2e::text(&out));
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_stand_alone_agent_simulates_nodes_against_a_server_from_its_kubeconfig() {
    let s = Server::start();
    let _agent = Agent(
        Command::new(capstan_e2e::capstan_bin())
            .args([
                "agent",
                "--simulate",
                "2",
                "--node-prefix",
                "remote",
                "--kubeconfig",
            ])
            .arg(s.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn capstan agent"),
    );
    wait_for("two Ready nodes", WITHIN, || {
        let out = s.kubectl_ok(&["get", "nodes"]);
        (out.lines()
            .filter(|l| l.starts_with("remote-") && l.contains(" Ready "))
            .count()
            == 2)
            .then_some(())
    });
    apply(&s, &pod_yaml("web", "remote-1", "", "", ""));
    let pod = wait_phase(&s, "web", "Running");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("10.128.1."),
        "{pod}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_watcher_sees_a_bound_pod_go_from_pending_to_running() {
    let s = Server::start_args(&[
        "--simulated-nodes",
        "1",
        "--node-lease-duration-seconds",
        "40",
    ]);
    let c = client(&s).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    let deadline = Instant::now() + WITHIN;
    while nodes
        .get_opt("sim-node-0")
        .await
        .expect("get node")
        .is_none()
    {
        assert!(Instant::now() < deadline, "no node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut events = watcher(
        pods.clone(),
        watcher::Config::default().fields("metadata.name=web"),
    )
    .boxed();
    // A watcher is lazy: its initial list runs when first polled. Wait for that list to
    // finish before creating the pod, or the list itself may already show it Running.
    tokio::time::timeout(WITHIN, async {
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("watch: {e}"),
                None => panic!("the watch ended before its initial list"),
            }
        }
    })
    .await
    .expect("initial list");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": "sim-node-0", "containers": [{"name": "app", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let mut phases: Vec<String> = Vec::new();
    let running = tokio::time::timeout(WITHIN, async {
        while let Some(ev) = events.next().await {
            let p = match ev.expect("watch event") {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            let phase = p
                .status
                .as_ref()
                .and_then(|st| st.phase.clone())
                .unwrap_or_default();
            if phases.last() != Some(&phase) {
                phases.push(phase.clone());
            }
            if phase == "Running" {
                return p;
            }
        }
        panic!("the watch ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no Running pod; phases seen: {phases:?}"));
    assert_eq!(phases, ["Pending", "Running"]);
    let status = running.status.expect("status");
    assert!(status.pod_ip.unwrap_or_default().starts_with("10.128.0."));
    let cs = &status.container_statuses.expect("container statuses")[0];
    assert!(
        cs.ready && cs.started == Some(true) && cs.restart_count == 0,
        "{cs:?}"
    );
}
