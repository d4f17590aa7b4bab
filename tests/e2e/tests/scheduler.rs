//! The scheduler through kubectl against the running binary: three Nodes with labels and a
//! taint, pods that must land where upstream's scheduler puts them, the FailedScheduling
//! report, binding with no further input once a node fits, preemption, no over-commit, and
//! the stand-alone `capstan scheduler --kubeconfig`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};

const WAIT: Duration = Duration::from_secs(30);

/// n1 (zone a, ssd), n2 (zone b, hdd), n3 (zone c, gpu, tainted dedicated=gpu:NoSchedule);
/// each 4 cpu, 8Gi, 110 pods.
fn three_nodes(s: &Server) {
    for (name, labels, taints) in [
        ("n1", r#"{"zone": "a", "disk": "ssd"}"#, "[]"),
        ("n2", r#"{"zone": "b", "disk": "hdd"}"#, "[]"),
        (
            "n3",
            r#"{"zone": "c", "gpu": "true"}"#,
            r#"[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]"#,
        ),
    ] {
        add_node(s, name, labels, taints, "4");
    }
}

/// A Node as a kubelet registers it (with the `kubernetes.io/hostname` label).
fn add_node(s: &Server, name: &str, labels: &str, taints: &str, cpu: &str) {
    let labels = labels.replacen(
        '{',
        &format!(r#"{{"kubernetes.io/hostname": "{name}", "#),
        1,
    );
    let labels = labels.replace(", }", "}");
    let doc = format!(
        r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}", "labels": {labels}}},
            "spec": {{"taints": {taints}}}}}"#
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], &doc);
    assert!(out.status.success(), "{:?}", text(&out));
    let status = format!(
        r#"{{"status": {{"capacity": {{"cpu": "{cpu}", "memory": "8Gi", "pods": "110"}},
            "allocatable": {{"cpu": "{cpu}", "memory": "8Gi", "pods": "110"}}}}}}"#
    );
    s.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

fn create(s: &Server, yaml: &str) {
    let out = s.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "{:?}", text(&out));
}

fn pod(name: &str, extra_spec: &str, labels: &str, cpu: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {labels}}},
            "spec": {{"containers": [{{"name": "c", "image": "busybox",
              "resources": {{"requests": {{"cpu": "{cpu}", "memory": "64Mi"}}}}}}]{extra_spec}}}}}"#
    )
}

fn node_of(s: &Server, name: &str) -> String {
    s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"])
        .trim()
        .to_string()
}

/// Wait until the pod is bound; its node.
fn wait_bound(s: &Server, name: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = node_of(s, name);
        if !n.is_empty() {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} was not bound within {WAIT:?}:\n{}",
            s.kubectl_ok(&["describe", "pod", name])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until `kubectl describe pod` shows `what`; the description.
fn wait_described(s: &Server, name: &str, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = s.kubectl_ok(&["describe", "pod", name]);
        if d.contains(what) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "describe pod {name} never showed {what:?}:\n{d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// NAME -> NODE from `kubectl get pods -o wide`.
fn wide(s: &Server) -> HashMap<String, String> {
    let out = s.kubectl_ok(&["get", "pods", "-o", "wide"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let node_col = header.find("NODE ").expect("a NODE column");
    lines
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default().to_string();
            let node = l[node_col..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            (name, node)
        })
        .collect()
}

const TOLERATE_GPU: &str = r#", "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]"#;

#[test]
fn placement_follows_selectors_affinity_taints_and_spread() {
    let s = Server::start();
    three_nodes(&s);
    create(
        &s,
        &pod("ssd", r#", "nodeSelector": {"disk": "ssd"}"#, "{}", "100m"),
    );
    create(
        &s,
        &pod(
            "zone-b",
            r#", "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}"#,
            "{}",
            "100m",
        ),
    );
    create(
        &s,
        &pod(
            "gpu",
            &format!(r#", "nodeSelector": {{"gpu": "true"}}{TOLERATE_GPU}"#),
            "{}",
            "100m",
        ),
    );
    // Preferred affinity (weight 100, x2) for zone c beats everything else the pod scores.
    create(
        &s,
        &pod(
            "prefers-c",
            &format!(
                r#", "affinity": {{"nodeAffinity": {{"preferredDuringSchedulingIgnoredDuringExecution":
        [{{"weight": 100, "preference": {{"matchExpressions": [{{"key": "zone", "operator": "In", "values": ["c"]}}]}}}}]}}}}{TOLERATE_GPU}"#
            ),
            "{}",
            "100m",
        ),
    );
    for (name, node) in [
        ("ssd", "n1"),
        ("zone-b", "n2"),
        ("gpu", "n3"),
        ("prefers-c", "n3"),
    ] {
        assert_eq!(wait_bound(&s, name), node, "{name}");
    }
    // Required anti-affinity by hostname: two solos on the two untainted nodes, the third
    // has nowhere to go.
    let anti = r#", "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        [{"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}"#;
    for n in ["solo-1", "solo-2", "solo-3"] {
        create(&s, &pod(n, anti, r#"{"app": "solo"}"#, "100m"));
    }
    let a = wait_bound(&s, "solo-1");
    let b = wait_bound(&s, "solo-2");
    let mut got = [a, b];
    got.sort();
    assert_eq!(got, ["n1".to_string(), "n2".to_string()]);
    wait_described(&s, "solo-3", "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.");
    // Topology spread over zones with maxSkew 1: one pod per zone.
    let spread = format!(
        r#", "topologySpreadConstraints": [{{"maxSkew": 1, "topologyKey": "zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {{"matchLabels": {{"app": "spread"}}}}}}]{TOLERATE_GPU}"#
    );
    let docs: Vec<String> = (1..=3)
        .map(|i| {
            pod(
                &format!("spread-{i}"),
                &spread,
                r#"{"app": "spread"}"#,
                "100m",
            )
        })
        .collect();
    create(&s, &docs.join("\n---\n"));
    let mut zones: Vec<String> = (1..=3)
        .map(|i| wait_bound(&s, &format!("spread-{i}")))
        .collect();
    zones.sort();
    assert_eq!(zones, ["n1", "n2", "n3"]);
    // What kubectl prints agrees.
    let w = wide(&s);
    for (name, node) in [
        ("ssd", "n1"),
        ("zone-b", "n2"),
        ("gpu", "n3"),
        ("prefers-c", "n3"),
        ("solo-3", "<none>"),
    ] {
        assert_eq!(w.get(name).map(String::as_str), Some(node), "{w:?}");
    }
    let d = s.kubectl_ok(&["describe", "pod", "ssd"]);
    assert!(
        d.contains("Scheduled") && d.contains("Successfully assigned default/ssd to n1"),
        "{d}"
    );
}

#[test]
fn unschedulable_pod_reports_and_binds_once_a_node_fits() {
    let s = Server::start();
    three_nodes(&s);
    create(&s, &pod("big", "", "{}", "6"));
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. \
        preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let d = wait_described(&s, "big", expected);
    assert!(
        d.contains("FailedScheduling") && d.contains("default-scheduler"),
        "{d}"
    );
    let cond = s.kubectl_ok(&["get", "pod", "big", "-o",
        r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}/{.status.conditions[?(@.type=="PodScheduled")].reason}/{.status.conditions[?(@.type=="PodScheduled")].message}"#]);
    assert_eq!(cond, format!("False/Unschedulable/{expected}"));
    // A node big enough appears: the pod binds with no further input.
    add_node(&s, "n4", r#"{"zone": "d"}"#, "[]", "8");
    assert_eq!(wait_bound(&s, "big"), "n4");
    wait_described(&s, "big", "Successfully assigned default/big to n4");
    let cond = s.kubectl_ok(&[
        "get",
        "pod",
        "big",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}"#,
    ]);
    assert_eq!(cond, "True");
}

#[test]
fn higher_priority_preempts_and_never_policy_waits() {
    let s = Server::start();
    three_nodes(&s);
    create(
        &s,
        r#"{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "low"}, "value": 10}"#,
    );
    create(
        &s,
        r#"{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}"#,
    );
    create(
        &s,
        r#"{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high-never"}, "value": 1000, "preemptionPolicy": "Never"}"#,
    );
    // No node agent runs these nodes, so a victim with a grace period would stay
    // Terminating (holding its room) as upstream's would: these end at once.
    for n in ["low-1", "low-2"] {
        create(
            &s,
            &pod(
                n,
                r#", "priorityClassName": "low", "terminationGracePeriodSeconds": 0"#,
                "{}",
                "3",
            ),
        );
    }
    let mut placed = [wait_bound(&s, "low-1"), wait_bound(&s, "low-2")];
    placed.sort();
    assert_eq!(placed, ["n1".to_string(), "n2".to_string()]);
    // preemptionPolicy Never: it waits, saying so.
    create(
        &s,
        &pod("never", r#", "priorityClassName": "high-never""#, "{}", "3"),
    );
    wait_described(&s, "never", "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.");
    s.kubectl_ok(&["delete", "pod", "never"]);
    create(
        &s,
        &pod("vip", r#", "priorityClassName": "high""#, "{}", "3"),
    );
    let node = wait_bound(&s, "vip");
    let pods = s.kubectl_ok(&["get", "pods", "-o", "name"]);
    let survivors: Vec<&str> = pods.lines().filter(|l| l.contains("low-")).collect();
    assert_eq!(survivors.len(), 1, "exactly one victim: {pods}");
    let survivor = survivors[0].trim_start_matches("pod/");
    assert_ne!(
        node_of(&s, survivor),
        node,
        "the survivor is on the other node"
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "-o",
        "custom-columns=REASON:.reason,MSG:.message",
    ]);
    assert!(events.contains("Preempted"), "{events}");
}

#[test]
fn no_node_is_over_committed() {
    let s = Server::start();
    three_nodes(&s);
    // 30 pods of 500m: n1 and n2 take 8 each, the tainted n3 none; 14 stay Pending.
    let docs: Vec<String> = (0..30)
        .map(|i| pod(&format!("p{i}"), "", "{}", "500m"))
        .collect();
    create(&s, &docs.join("\n---\n"));
    let deadline = Instant::now() + WAIT;
    let per_node = loop {
        let out = s.kubectl_ok(&["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}/{.status.conditions[?(@.type==\"PodScheduled\")].status}{\"\\n\"}{end}"]);
        let mut per_node: HashMap<String, usize> = HashMap::new();
        let mut failed = 0;
        for l in out.lines() {
            match l.split_once('/') {
                Some(("", "False")) => failed += 1,
                Some((n, _)) if !n.is_empty() => *per_node.entry(n.to_string()).or_default() += 1,
                _ => {}
            }
        }
        if failed == 14 && per_node.values().sum::<usize>() == 16 {
            break per_node;
        }
        assert!(Instant::now() < deadline, "pods did not settle: {out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // 8 x 500m = 4 cpu: each untainted node exactly full, never more.
    assert_eq!(per_node.get("n1"), Some(&8));
    assert_eq!(per_node.get("n2"), Some(&8));
    assert_eq!(per_node.get("n3"), None);
    let d = s.kubectl_ok(&["describe", "pod", "p29"]);
    if node_of(&s, "p29").is_empty() {
        assert!(d.contains("2 Insufficient cpu"), "{d}");
    }
}

#[test]
fn invalid_affinity_operator_is_refused_at_the_door() {
    let s = Server::start();
    let bad = pod(
        "bad",
        r#", "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near", "values": ["a"]}]}]}}}"#,
        "{}",
        "100m",
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], &bad);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("is invalid") && err.contains("operator"),
        "{err}"
    );
}

#[test]
fn standalone_scheduler_binds_for_a_server_without_one() {
    let s = Server::start_args(&["--disable-scheduler"]);
    three_nodes(&s);
    create(&s, &pod("waits", "", "{}", "100m"));
    assert_eq!(node_of(&s, "waits"), "");
    let mut sched = std::process::Command::new(capstan_e2e::capstan_bin())
        .args(["scheduler", "--kubeconfig"])
        .arg(s.kubeconfig())
        .spawn()
        .expect("start capstan scheduler");
    let node = wait_bound(&s, "waits");
    let _ = sched.kill();
    let _ = sched.wait();
    assert!(node == "n1" || node == "n2", "{node}");
}
