//! Two nodes: the server's own and an agent that joins from another "host" (a network
//! namespace with a veth to this one) with a bootstrap token. A Deployment spreads over
//! both; pods on either node reach the others through a Service; killing the joined agent
//! makes its node NotReady and its pods move to the server's node.
//!
//! The agent runs under `nsenter --net` (not `ip netns exec`, which remounts /sys and so
//! hides the cgroup hierarchy): it shares this machine's mounts, as a second host's agent
//! has its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_e2e::{apply, capstan_bin, get_json, pod_netns, test_images_dir, wait_for, Server};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(60);

/// The other host: a network namespace, the veth pair joining it to this one, and the agent
/// running in it; all removed on drop (the agent's containers, links and rules by `capstan
/// cleanup` run in the namespace).
struct Host {
    netns: String,
    host_link: String,
    data_dir: tempfile::TempDir,
    agent: Option<Child>,
}

impl Host {
    /// `10.250.<n>.1/24` here, `.2` there, the default route there pointing here.
    fn new(n: u32) -> Host {
        let netns = format!("capmn{n}");
        let host_link = format!("capmn{n}h");
        let peer = format!("capmn{n}p");
        let here = format!("10.250.{n}.1");
        let there = format!("10.250.{n}.2");
        let run = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A leftover of a killed run with this number goes first.
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &host_link])
            .output();
        run(&["ip", "netns", "add", &netns]);
        run(&[
            "ip", "link", "add", &host_link, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &peer, "netns", &netns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{here}/24"),
            "dev",
            &host_link,
        ]);
        run(&["ip", "link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &netns];
            all.extend_from_slice(args);
            run(&all);
        };
        inside(&["ip", "addr", "add", &format!("{there}/24"), "dev", &peer]);
        inside(&["ip", "link", "set", &peer, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "route", "add", "default", "via", &here]);
        let data_dir = tempfile::tempdir().expect("tempdir");
        let images = data_dir.path().join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::copy(
            test_images_dir().join("busybox.tar"),
            images.join("busybox.tar"),
        )
        .expect("copy the busybox image");
        Host {
            netns,
            host_link,
            data_dir,
            agent: None,
        }
    }

    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns));
        c
    }

    /// `capstan agent <join args>` in the namespace, as node `name`.
    fn join(&mut self, join: &[String], name: &str) {
        let child = self
            .nsenter()
            .arg(capstan_bin())
            .args(join)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(["--node-name", name, "--node-lease-duration-seconds", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the agent");
        self.agent = Some(child);
    }

    fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir
            .path()
            .join("agent")
            .join("kubelet.kubeconfig")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_agent();
        let out = self
            .nsenter()
            .arg(capstan_bin())
            .args(["cleanup", "--data-dir"])
            .arg(self.data_dir.path())
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!("cleanup: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

/// The answers to `count` GETs of `url` from network namespace `netns`, each over a new
/// connection; None if curl could not get them all.
fn get_many(netns: &Path, url: &str, count: u32) -> Option<Vec<String>> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-H",
            "Connection: close",
            &format!("{url}?[1-{count}]"),
        ])
        .output()
        .expect("run curl");
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
}

fn node_condition(s: &Server, node: &str) -> Option<String> {
    let n = get_json(s, &["node", node])?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

/// Running pods labelled `app=web` and not being deleted, as (name, node, uid).
fn web_pods(s: &Server) -> Vec<(String, String, String)> {
    let Some(list) = get_json(s, &["pods", "-l", "app=web"]) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p: &Value| {
            let s = |ptr: &str| {
                p.pointer(ptr)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (s("/metadata/name"), s("/spec/nodeName"), s("/metadata/uid"))
        })
        .collect()
}

/// `wait_for` up to 120 s; on timeout the panic shows the pods and events.
fn wait_or_show<T>(s: &Server, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            let pods = s.kubectl(&["get", "pods", "-o", "wide"]);
            let events = s.kubectl(&["get", "events", "--sort-by=.lastTimestamp"]);
            panic!(
                "timed out waiting for {what}\n{}\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      # Two per node, and off an unreachable node within seconds (the default is 300 s); a
      # tainted node is no spreading domain, so all four then fit on the other.
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: web
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        envFrom: [{secretRef: {name: web-secret}}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
stringData: {GREETING: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated}
stringData: {KEY: not for nodes}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

#[test]
fn an_agent_joins_from_another_host_and_pods_reach_each_other_across_nodes() {
    // This process's own number keeps parallel runs' links apart.
    let n = 1 + std::process::id() % 250;
    let mut other = Host::new(n);
    let here = format!("10.250.{n}.1");
    let mut s = Server::start_node_on(
        "0.0.0.0:0",
        &[
            "--advertise-address",
            &here,
            "--cluster-cidr",
            "10.199.0.0/16",
            // Leases renewed every 0.5 s, a node unheard of for 6 s is Unknown.
            "--node-lease-duration-seconds",
            "2",
            "--node-monitor-grace-period",
            "6s",
        ],
    );
    // The join command, as an admin gets it.
    let out = Command::new(capstan_bin())
        .args(["token", "create", "--print-join-command", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .expect("capstan token create");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "{line}");
    assert!(
        line.starts_with(&format!(
            "capstan agent --server https://{here}:{} --token ",
            s.port
        )),
        "{line}"
    );
    let args: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
    // The pinned hash is kubeadm's: SHA-256 of the CA's public key, as openssl computes it.
    let openssl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum",
            s.data_dir.join("pki").join("ca.crt").display()
        ))
        .output()
        .expect("openssl");
    let digest = String::from_utf8_lossy(&openssl.stdout);
    let digest = digest.split_whitespace().next().unwrap_or_default();
    assert!(
        line.ends_with(&format!("--ca-cert-hash sha256:{digest}")),
        "{line} vs {digest}"
    );

    // A wrong hash is refused before the token is ever sent.
    let mut bad = args.clone();
    let last = bad.len() - 1;
    bad[last] = format!("sha256:{}", "0".repeat(64));
    let refused = other
        .nsenter()
        .arg(capstan_bin())
        .args(&bad)
        .arg("--data-dir")
        .arg(other.data_dir.path())
        .args(["--node-name", "mn-b"])
        .output()
        .expect("run the agent");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("refusing to join"), "{err}");
    assert!(!other.kubeconfig().exists());

    other.join(&args, "mn-b");
    wait_for("both nodes Ready", WITHIN, || {
        let vm = get_json(&s, &["nodes"])?;
        let ready = vm["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 2).then_some(())
    });
    // It joined as itself: a certificate for system:node:mn-b from an approved CSR, and
    // a pod CIDR from the cluster range.
    let csrs = s.kubectl_ok(&["get", "csr", "--no-headers"]);
    assert!(
        csrs.contains("kubernetes.io/kube-apiserver-client-kubelet")
            && csrs.contains("Approved,Issued"),
        "{csrs}"
    );
    let whoami = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(other.kubeconfig())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .env("NO_PROXY", "*")
        .output()
        .expect("kubectl");
    // kubectl runs here, the kubeconfig names the advertised address (reachable from here too).
    let who = String::from_utf8_lossy(&whoami.stdout);
    assert!(
        who.starts_with("system:node:mn-b "),
        "{who} {}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    assert!(who.contains("system:nodes"), "{who}");
    let node_b = get_json(&s, &["node", "mn-b"]).expect("node mn-b");
    let cidr_b = node_b["spec"]["podCIDR"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cidr_b.starts_with("10.199."), "{node_b}");
    // Once set it stays (upstream's ValidateNodeUpdate): a 422 naming the field.
    let changed = s.kubectl(&[
        "patch",
        "node",
        "mn-b",
        "--type=merge",
        "-p",
        r#"{"spec":{"podCIDR":"10.199.77.0/24","podCIDRs":["10.199.77.0/24"]}}"#,
    ]);
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success(), "{err}");
    assert!(
        err.contains(r#"The Node "mn-b" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#),
        "{err}"
    );

    apply(&s, WORKLOAD);
    let pods = wait_or_show(&s, "4 web pods Ready, 2 on each node", || {
        let p = web_pods(&s);
        let on_b = p.iter().filter(|(_, n, _)| n == "mn-b").count();
        (p.len() == 4 && on_b == 2).then_some(p)
    });
    // The Node authorizer: the joined node reads the Secret its pods use, not another one,
    // and lists none (upstream's words).
    let as_node = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(other.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = as_node(&["get", "secret", "web-secret", "-o", "name"]);
    assert!(ok && text.trim() == "secret/web-secret", "{text}");
    let (ok, text) = as_node(&["get", "secret", "unrelated"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"secrets "unrelated" is forbidden: User "system:node:mn-b" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'mn-b' and this object"#),
        "{text}"
    );
    let (ok, text) = as_node(&["get", "secrets"]);
    assert!(!ok && text.contains("forbidden"), "{text}");
    let svc = get_json(&s, &["service", "web"]).expect("service");
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let url = format!("http://{ip}/index.html");
    let all: BTreeSet<String> = pods.iter().map(|(n, _, _)| n.clone()).collect();
    // From a pod on each node, through the Service: answers come from pods on both nodes.
    for on_joined in [true, false] {
        let (_, node, uid) = pods
            .iter()
            .find(|(_, n, _)| (n == "mn-b") == on_joined)
            .expect("a pod on the node")
            .clone();
        let netns = pod_netns(&uid);
        let seen = wait_for(
            &format!("pods on both nodes to answer a client on {node}"),
            WITHIN,
            || {
                let got: BTreeSet<String> = get_many(&netns, &url, 24)?.into_iter().collect();
                let nodes: BTreeSet<&str> = pods
                    .iter()
                    .filter(|(name, _, _)| got.contains(name))
                    .map(|(_, n, _)| n.as_str())
                    .collect();
                (nodes.len() == 2).then_some(got)
            },
        );
        assert!(seen.is_subset(&all), "{seen:?} not among {all:?}");
    }
    // The server reaches the joined node's pods over the tunnel the agent opened.
    let (name_b, _, _) = pods
        .iter()
        .find(|(_, n, _)| n == "mn-b")
        .expect("a pod on mn-b")
        .clone();
    let out = s.kubectl_ok(&[
        "exec",
        &name_b,
        "--",
        "sh",
        "-c",
        "echo $GREETING from $(hostname)",
    ]);
    assert_eq!(out.trim(), format!("hello from {name_b}"));
    // Routed pod networks (host-gw): this host sends the joined node's pod CIDR to it.
    let routes = Command::new("ip")
        .args(["route", "show", &cidr_b])
        .output()
        .expect("ip");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains(&format!("via 10.250.{n}.2")), "{routes}");

    // The joined agent dies: its node goes NotReady (Unknown) and its pods move here.
    other.kill_agent();
    wait_for("mn-b Ready=Unknown", WITHIN, || {
        (node_condition(&s, "mn-b")? == "Unknown").then_some(())
    });
    let moved = wait_or_show(&s, "4 web pods Ready on the server's node", || {
        let p = web_pods(&s);
        (p.len() == 4 && p.iter().all(|(_, n, _)| n != "mn-b")).then_some(p)
    });
    assert_eq!(moved.len(), 4);

    // A Node deleted while this host's agent is down: the agent, started again, removes the
    // route it had made to that node's pods (it keeps a record of the routes it made).
    let route_b = || {
        let out = Command::new("ip")
            .args(["route", "show", &cidr_b])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let nodes = get_json(&s, &["nodes"]).expect("nodes");
    let own_cidr = nodes["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|n| n["metadata"]["name"] != "mn-b")
        .and_then(|n| n["spec"]["podCIDR"].as_str())
        .expect("the server node's podCIDR")
        .to_string();
    s.kill();
    let data_dir = s.data_dir.clone();
    let mut offline = Server::start_with_args(&data_dir, &["--cluster-cidr", "10.199.0.0/16"]);
    offline.kubectl_ok(&["delete", "node", "mn-b"]);
    offline.kill();
    assert!(
        route_b().contains("via"),
        "the route stays while no agent runs"
    );
    let _back = Server::start_with_args(
        &data_dir,
        &[
            "--with-agent",
            "--pod-cidr",
            &own_cidr,
            "--advertise-address",
            &here,
            "--cluster-cidr",
            "10.199.0.0/16",
        ],
    );
    wait_for("the deleted node's route to go", WITHIN, || {
        route_b().is_empty().then_some(())
    });
}
