//! NetworkPolicies decide who reaches a pod and where a pod may go: default-deny, pod and
//! namespace selectors, label changes, ipBlock with except, numeric, ranged and named ports,
//! traffic through a ClusterIP, egress with DNS let out; deleting the policies opens up again.
//! Pods connect with the host's curl run in their network namespace (their address, their
//! veth); DNS is asked from inside the pod with `kubectl exec ... nslookup`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{apply, get_json, node_ready, pod_netns, text, wait_for, Server};
use serde_json::Value;

/// What the server pod answers with.
const MARKER: &str = "served-by-policy-web";

/// The server on ports 80 (named `http`) and 8080 (named `alt`), and idle client pods.
fn server_pod(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {ns}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo {MARKER} > /www/index.html && httpd -p 8080 -h /www && exec httpd -f -p 80 -h /www"]
    ports: [{{name: http, containerPort: 80}}, {{name: alt, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
"#
    )
}

fn idle_pod(ns: &str, name: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#
    )
}

/// The pod once Running with an address.
fn running(s: &Server, ns: &str, name: &str) -> Value {
    wait_for(
        &format!("pod {ns}/{name} to run"),
        Duration::from_secs(120),
        || {
            let p = get_json(s, &["pod", "-n", ns, name])?;
            (p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()).then_some(p)
        },
    )
}

fn ip_of(p: &Value) -> String {
    p["status"]["podIP"].as_str().expect("podIP").to_string()
}

/// Whether the pod whose network namespace is `netns` gets the server's page from `url`
/// within 2 s: the host's curl run in the pod's namespace, so the packets leave from the
/// pod's address and veth as its own would (busybox's static wget cannot resolve here).
fn fetch(netns: &Path, url: &str) -> bool {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["curl", "-s", "--max-time", "2", url])
        .output()
        .expect("run curl");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(MARKER)
}

/// Polls until the pod reaches `url` (`want`) or is kept out (`!want`); rules follow
/// watches, so the change shows within the deadline.
fn expect_reach(who: &Client, url: &str, want: bool) {
    let what = if want { "reach" } else { "be kept from" };
    wait_for(
        &format!("{} to {what} {url}", who.name),
        Duration::from_secs(20),
        || (fetch(&who.netns, url) == want).then_some(()),
    );
}

/// A running pod acting as a client: its name and network namespace.
struct Client {
    name: String,
    netns: PathBuf,
}

fn client(s: &Server, ns: &str, name: &str) -> Client {
    let p = running(s, ns, name);
    Client {
        name: format!("{ns}/{name}"),
        netns: pod_netns(p["metadata"]["uid"].as_str().expect("uid")),
    }
}

fn reaches(who: &Client, url: &str) -> bool {
    fetch(&who.netns, url)
}

fn kubectl_ok(s: &Server, args: &[&str]) {
    let out = s.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {:?}", text(&out));
}

fn pod_cidr(s: &Server) -> String {
    let nodes = get_json(s, &["nodes"]).expect("nodes");
    nodes["items"][0]["spec"]["podCIDR"]
        .as_str()
        .expect("podCIDR")
        .to_string()
}

fn cluster_ip(s: &Server, ns: &str, service: &str) -> String {
    let svc = get_json(s, &["service", "-n", ns, service]).expect("service");
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string()
}

#[test]
fn ingress_policies_admit_only_what_a_rule_allows() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let ns = "default";
    apply(
        &s,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {team: b}}\n",
    );
    apply(&s, &server_pod(ns));
    apply(&s, &idle_pod(ns, "client", "role: client"));
    apply(&s, &idle_pod(ns, "stranger", "role: none"));
    apply(&s, &idle_pod("other", "far", "role: none"));
    let server = ip_of(&running(&s, ns, "server"));
    let stranger_ip = ip_of(&running(&s, ns, "stranger"));
    let (client, stranger, far) = (
        client(&s, ns, "client"),
        client(&s, ns, "stranger"),
        client(&s, "other", "far"),
    );
    let http = format!("http://{server}/");
    let alt = format!("http://{server}:8080/");
    let via_service = format!("http://{}/", cluster_ip(&s, ns, "web"));

    // Open before any policy: from this namespace, the other one, and through the Service.
    expect_reach(&client, &http, true);
    expect_reach(&far, &alt, true);
    expect_reach(&stranger, &via_service, true);

    // Default deny: nobody gets in.
    apply(
        &s,
        &format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-all, namespace: {ns}}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Ingress]\n"
        ),
    );
    expect_reach(&client, &http, false);
    assert!(!reaches(&far, &alt), "far still reaches the server");

    // Pods labelled role=client, on the port named `http` only.
    apply(
        &s,
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-client, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
    ports: [{{port: http}}]
"#
        ),
    );
    expect_reach(&client, &http, true);
    assert!(!reaches(&stranger, &http), "an unlabelled pod got in");
    assert!(
        !reaches(&client, &alt),
        "the client got in on a port no rule names"
    );

    // Through the ClusterIP the policy sees the client's address and decides the same.
    assert!(
        reaches(&client, &via_service),
        "the client is refused through the Service"
    );
    assert!(
        !reaches(&stranger, &via_service),
        "the stranger got in through the Service"
    );

    // Labels decide, as they change.
    kubectl_ok(
        &s,
        &[
            "label",
            "pod",
            "-n",
            ns,
            "stranger",
            "role=client",
            "--overwrite",
        ],
    );
    expect_reach(&stranger, &http, true);
    kubectl_ok(&s, &["label", "pod", "-n", ns, "client", "role-"]);
    expect_reach(&client, &http, false);

    // A namespace selector with a port range: the other namespace on 8000-8090 only.
    apply(
        &s,
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-team-b, namespace: {ns}}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: b}}}}}}]
    ports: [{{port: 8000, endPort: 8090}}]
"#
        ),
    );
    expect_reach(&far, &alt, true);
    assert!(
        !reaches(&far, &http),
        "the other namespace got in outside its range"
    );

    // The pod network as an ipBlock on 8080, except the stranger.
    apply(
        &s,
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-block, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: "{}", except: ["{stranger_ip}/32"]}}}}]
    ports: [{{port: 8080, protocol: TCP}}]
"#,
            pod_cidr(&s)
        ),
    );
    expect_reach(&client, &alt, true);
    assert!(!reaches(&stranger, &alt), "the excepted address got in");

    // Without policies everything is open again.
    kubectl_ok(&s, &["delete", "networkpolicy", "-n", ns, "--all"]);
    expect_reach(&stranger, &alt, true);
    expect_reach(&client, &http, true);
    expect_reach(&far, &http, true);
}

/// Whether a connection from `netns` to `url` gets an answer within 300 ms (curl run in the
/// pod's network namespace: quick enough to time rule updates).
fn answers(netns: &Path, url: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["curl", "-s", "-o", "/dev/null", "--max-time", "0.3", url])
        .status()
        .is_ok_and(|s| s.success())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[test]
fn egress_default_deny_keeps_a_pod_in_but_lets_dns_out() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let ns = "default";
    apply(&s, &server_pod(ns));
    apply(&s, &idle_pod(ns, "client", "role: client"));
    let server = ip_of(&running(&s, ns, "server"));
    let client = client(&s, ns, "client");
    let via_service = format!("http://{}/", cluster_ip(&s, ns, "web"));
    expect_reach(&client, &via_service, true);

    // Egress denied but for DNS: the Service's name resolves in the pod, the connection does
    // not leave.
    apply(
        &s,
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: egress-dns-only, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{role: client}}}}
  egress:
  - ports: [{{port: 53, protocol: UDP}}, {{port: 53, protocol: TCP}}]
"#
        ),
    );
    expect_reach(&client, &format!("http://{server}/"), false);
    let lookup = s.kubectl(&[
        "exec",
        "-n",
        ns,
        "client",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    let (out, err) = text(&lookup);
    assert!(
        out.contains("Address"),
        "DNS failed under the egress policy: {out} {err}"
    );
    assert!(
        !reaches(&client, &via_service),
        "the client got out past the egress policy"
    );
    // Ingress-only policies leave the server's own ingress open: the rule that lets the
    // client out is the egress one.
    apply(
        &s,
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: egress-to-web, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{role: client}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: http}}]
"#
        ),
    );
    expect_reach(&client, &via_service, true);
    kubectl_ok(&s, &["delete", "networkpolicy", "-n", ns, "--all"]);
    expect_reach(&client, &format!("http://{server}:8080/"), true);

    // Figures: kubectl creating a default-deny policy → the first connection kept out, and
    // its deletion → the first one let in again.
    let netns = &client.netns;
    let url = format!("http://{server}/");
    assert!(
        answers(netns, &url),
        "curl from the client's namespace fails without policies"
    );
    let deny = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-all, namespace: {ns}}}\nspec:\n  podSelector: {{}}\n"
    );
    let (mut block, mut unblock) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        // Timed to the start of the first probe that saw the change: a dropped probe then
        // waits out its own timeout, which is not the rules' doing.
        let started = Instant::now();
        apply(&s, &deny);
        let seen = wait_for("the policy to block", Duration::from_secs(10), || {
            let probe = Instant::now();
            (!answers(netns, &url)).then_some(probe)
        });
        block.push(seen.duration_since(started));
        let started = Instant::now();
        kubectl_ok(&s, &["delete", "networkpolicy", "-n", ns, "deny-all"]);
        let seen = wait_for("the deletion to open", Duration::from_secs(10), || {
            let probe = Instant::now();
            answers(netns, &url).then_some(probe)
        });
        unblock.push(seen.duration_since(started));
    }
    block.sort();
    unblock.sort();
    println!(
        "network_policy: kubectl apply → blocked p50 {:.0} ms p99 {:.0} ms; kubectl delete → open p50 {:.0} ms p99 {:.0} ms ({} tries, kubectl's own time included)",
        percentile(&block, 0.5),
        percentile(&block, 0.99),
        percentile(&unblock, 0.5),
        percentile(&unblock, 0.99),
        block.len()
    );
}
