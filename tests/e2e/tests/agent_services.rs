//! Services lead somewhere: a Deployment behind a Service answers by ClusterIP from a pod
//! and by NodePort (and a LoadBalancer's node address) from the host, spread over its pods;
//! affinity, scaling, deletion and hairpin follow upstream kube-proxy, and a Service without
//! endpoints refuses connections.
//! Pods are reached by running the host's curl in their network namespace (their address,
//! their route), as `agent_network.rs` does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{apply, get_json, node_ready, pod_netns, wait_for, Server};
use serde_json::Value;

/// The answers to `count` GETs of `url`, each over a new connection, made in `netns` (the
/// host when None); Err holds curl's exit code and message when it could not get them all.
fn get_many(netns: Option<&Path>, url: &str, count: u32) -> Result<Vec<String>, (i32, String)> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let glob = if count > 1 {
        format!("{url}?[1-{count}]")
    } else {
        url.to_string()
    };
    let out = cmd
        .args(["-sS", "--max-time", "3", "-H", "Connection: close", &glob])
        .output()
        .expect("run curl");
    if !out.status.success() {
        return Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn uid_of(p: &Value) -> String {
    p["metadata"]["uid"].as_str().expect("uid").to_string()
}

/// The Deployment's pods that are not being deleted, by name, once `want` of them are Ready.
fn ready_pods(s: &Server, label: &str, want: usize) -> Vec<Value> {
    wait_for(
        &format!("{want} ready pods labelled {label}"),
        Duration::from_secs(120),
        || {
            let list = get_json(s, &["pods", "-l", label])?;
            let live: Vec<Value> = list["items"]
                .as_array()?
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .cloned()
                .collect();
            let ready = live.iter().all(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            });
            (live.len() == want && ready).then_some(live)
        },
    )
}

fn names(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .map(str::to_string)
        .collect()
}

fn node_ip(s: &Server) -> String {
    let nodes = get_json(s, &["nodes"]).expect("nodes");
    nodes["items"][0]["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .expect("the node's InternalIP")
        .to_string()
}

fn cluster_ip(s: &Server, service: &str) -> String {
    let svc = get_json(s, &["service", service]).expect("service");
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string()
}

/// Requests/s of `count` sequential GETs, each over a new connection.
fn rate(netns: &Path, url: &str, count: u32) -> f64 {
    let started = Instant::now();
    let answers = get_many(Some(netns), url, count).expect("throughput run");
    assert_eq!(answers.len() as u32, count);
    f64::from(count) / started.elapsed().as_secs_f64()
}

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # httpd as PID 1 ignores SIGTERM: a deleted pod lives out its grace period, so leaving
      # the rotation early is the proxy's doing.
      terminationGracePeriodSeconds: 90
      containers:
      - name: web
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: www, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 81, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody-here}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: ["sleep", "3600"]}
"#;

#[test]
fn a_deployment_behind_services_is_reached_spread_sticky_and_follows_its_pods() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(&s, WORKLOAD);
    let web_ip = cluster_ip(&s, "web");
    let sticky_ip = cluster_ip(&s, "web-sticky");
    let nobody_ip = cluster_ip(&s, "nobody");
    let client = ready_pods(&s, "role=client", 1);
    let client_ns: PathBuf = pod_netns(&uid_of(&client[0]));
    let pods = ready_pods(&s, "app=web", 3);
    let all = names(&pods);
    let url = format!("http://{web_ip}/index.html");

    // Spread: more than one backend answers over a bounded number of requests.
    let seen = wait_for(
        "two backends to answer through the ClusterIP",
        Duration::from_secs(30),
        || {
            let answers = get_many(Some(&client_ns), &url, 30).ok()?;
            let seen: BTreeSet<String> = answers.into_iter().collect();
            (seen.len() >= 2).then_some(seen)
        },
    );
    assert!(seen.is_subset(&all), "{seen:?} not among {all:?}");

    // NodePort from the host, on loopback and on the node's address.
    let svc = get_json(&s, &["service", "web"]).expect("service");
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    for host in ["127.0.0.1".to_string(), node_ip(&s)] {
        let url = format!("http://{host}:{node_port}/index.html");
        let answer = wait_for(
            &format!("the NodePort on {host} to answer"),
            Duration::from_secs(30),
            || get_many(None, &url, 1).ok(),
        );
        assert!(all.contains(&answer[0]), "{url}: {answer:?}");
    }

    // ServiceLB: a LoadBalancer Service gets the node's address as its EXTERNAL-IP, and that
    // address's port leads to the pods, from the host and from a pod.
    let ip = node_ip(&s);
    let lb = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  \
             selector: {{app: web}}\n  ports: [{{port: 8090, targetPort: http}}]\n"
        )
    };
    // kubectl's columns: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE.
    let external_ip = |name: &str| {
        let out = s.kubectl_ok(&["get", "service", name, "--no-headers"]);
        out.split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_string()
    };
    apply(&s, &lb("web-lb"));
    wait_for("web-lb's EXTERNAL-IP", Duration::from_secs(30), || {
        (external_ip("web-lb") == ip).then_some(())
    });
    let lb_url = format!("http://{ip}:8090/index.html");
    for netns in [None, Some(client_ns.as_path())] {
        let answer = wait_for(
            &format!("the load balancer {lb_url} to answer from {netns:?}"),
            Duration::from_secs(30),
            || get_many(netns, &lb_url, 1).ok(),
        );
        assert!(all.contains(&answer[0]), "{lb_url}: {answer:?}");
    }
    // A second one on the same port stays pending, with an Event saying why, until the port is
    // free; a Service that stops being a LoadBalancer loses its address.
    apply(&s, &lb("web-lb2"));
    let events = |name: &str| {
        s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name},reason=PortInUse"),
            "-o",
            "jsonpath={.items[*].message}",
        ])
    };
    wait_for("web-lb2's PortInUse event", Duration::from_secs(30), || {
        events("web-lb2")
            .contains(
                "port 8090/TCP is already used by the load balancer of Service default/web-lb",
            )
            .then_some(())
    });
    assert_eq!(external_ip("web-lb2"), "<pending>");
    s.kubectl_ok(&["delete", "service", "web-lb"]);
    wait_for(
        "web-lb2 to take the address",
        Duration::from_secs(30),
        || (external_ip("web-lb2") == ip).then_some(()),
    );
    s.kubectl_ok(&[
        "patch",
        "service",
        "web-lb2",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    wait_for(
        "web-lb2 to lose its address",
        Duration::from_secs(30),
        || (external_ip("web-lb2") == "<none>").then_some(()),
    );

    // No endpoints: refused at once, not a timeout.
    let started = Instant::now();
    let refused = Command::new("nsenter")
        .arg(format!("--net={}", client_ns.display()))
        .args([
            "curl",
            "-sv",
            "--max-time",
            "5",
            &format!("http://{nobody_ip}/"),
        ])
        .output()
        .expect("run curl");
    let took = started.elapsed();
    let verbose = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(7), "{verbose}");
    assert!(verbose.contains("Connection refused"), "{verbose}");
    assert!(took < Duration::from_secs(2), "refusal took {took:?}");

    // ClientIP affinity: one client keeps one backend.
    let sticky = get_many(
        Some(&client_ns),
        &format!("http://{sticky_ip}:81/index.html"),
        20,
    )
    .expect("the sticky Service answers");
    let distinct: BTreeSet<&String> = sticky.iter().collect();
    assert_eq!(distinct.len(), 1, "affinity broken: {sticky:?}");

    // A deleted pod leaves the rotation long before its grace period (90 s) ends.
    let victim = pods[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let deleted = Instant::now();
    s.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for(
        "the deleted pod to leave the rotation",
        Duration::from_secs(30),
        || {
            let answers = get_many(Some(&client_ns), &url, 30).ok()?;
            (!answers.contains(&victim)).then_some(())
        },
    );
    let left_after = deleted.elapsed();
    let still = get_json(&s, &["pod", &victim]).expect("the deleted pod is still terminating");
    assert!(!still["metadata"]["deletionTimestamp"].is_null(), "{still}");
    eprintln!("figure: pod deleted -> out of the rotation in {left_after:?}");

    // Scaling to one: within a bounded wait only that pod answers.
    ready_pods(&s, "app=web", 3);
    let scaled = Instant::now();
    s.kubectl_ok(&["scale", "deployment", "web", "--replicas=1"]);
    let remaining = ready_pods(&s, "app=web", 1);
    let only = remaining[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    wait_for(
        "only the remaining pod to answer",
        Duration::from_secs(30),
        || {
            let answers = get_many(Some(&client_ns), &url, 20).ok()?;
            answers.iter().all(|a| *a == only).then_some(())
        },
    );
    eprintln!(
        "figure: scaled 3 -> 1, only the remaining pod answers after {:?}",
        scaled.elapsed()
    );

    // Hairpin: the pod reaches itself through its own Service.
    let own_ns = pod_netns(&uid_of(&remaining[0]));
    let answers = get_many(Some(&own_ns), &url, 5).expect("hairpin through the ClusterIP");
    assert!(answers.iter().all(|a| *a == only), "{answers:?}");

    // A selector-less Service with a hand-written EndpointSlice naming another node: with
    // `internalTrafficPolicy: Local` its traffic is dropped here (no local endpoint), and it
    // flows again once the slice names this node.
    let pod_ip = remaining[0]["status"]["podIP"].as_str().expect("podIP");
    let node = get_json(&s, &["nodes"]).expect("nodes")["items"][0]["metadata"]["name"]
        .as_str()
        .expect("node name")
        .to_string();
    let manual = |node_name: &str, policy: &str| {
        format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: manual}}
spec:
  internalTrafficPolicy: {policy}
  ports: [{{name: web, port: 82}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {{kubernetes.io/service-name: manual}}
addressType: IPv4
endpoints: [{{addresses: ["{pod_ip}"], nodeName: {node_name}, conditions: {{ready: true}}}}]
ports: [{{name: web, port: 8080, protocol: TCP}}]
"#
        )
    };
    apply(&s, &manual("elsewhere", "Cluster"));
    let manual_url = format!("http://{}:82/index.html", cluster_ip(&s, "manual"));
    wait_for(
        "the hand-written endpoint to answer",
        Duration::from_secs(30),
        || {
            let a = get_many(Some(&client_ns), &manual_url, 1).ok()?;
            (a == [only.clone()]).then_some(())
        },
    );
    apply(&s, &manual("elsewhere", "Local"));
    wait_for(
        "Local policy without a local endpoint to drop (time out)",
        Duration::from_secs(30),
        || match get_many(Some(&client_ns), &manual_url, 1) {
            Err((28, _)) => Some(()),
            _ => None,
        },
    );
    apply(&s, &manual(&node, "Local"));
    wait_for(
        "the endpoint on this node to answer under Local policy",
        Duration::from_secs(30),
        || get_many(Some(&client_ns), &manual_url, 1).ok(),
    );

    // Hand-written Endpoints (the older API) reach the proxy through their mirrored slice.
    apply(
        &s,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: legacy}}\nspec:\n  ports: [{{port: 83}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: legacy}}\nsubsets:\n- addresses: [{{ip: \"{pod_ip}\"}}]\n  ports: [{{port: 8080}}]\n"
        ),
    );
    let legacy_url = format!("http://{}:83/index.html", cluster_ip(&s, "legacy"));
    wait_for(
        "the mirrored endpoint to answer",
        Duration::from_secs(30),
        || {
            let a = get_many(Some(&client_ns), &legacy_url, 1).ok()?;
            (a == [only.clone()]).then_some(())
        },
    );

    // Figures: new connections per second through the ClusterIP and to the pod directly.
    let direct = rate(&client_ns, &format!("http://{pod_ip}:8080/index.html"), 500);
    let proxied = rate(&client_ns, &url, 500);
    eprintln!("figure: requests/s (curl, new connection each): pod IP {direct:.0}, ClusterIP {proxied:.0}");

    s.kubectl_ok(&["delete", "deployment", "web", "--wait=false"]);
    s.kubectl_ok(&["delete", "pods", "--all", "--grace-period=0", "--force"]);
}

/// A DNS query for `kubernetes.default.svc.cluster.local` (A, recursion desired) with `id`.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["kubernetes", "default", "svc", "cluster", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether one query over `sock` (always the same source port) is answered within 300 ms.
fn answered(sock: &std::net::UdpSocket, id: &mut u16) -> bool {
    *id = id.wrapping_add(1);
    if sock.send(&dns_query(*id)).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// UDP clients keep their 5-tuple, so a Service's UDP flow must be cleared when its
/// endpoint goes (kube-proxy's conntrack cleanup): one socket, never re-bound, follows the
/// Service from a live endpoint (the node's DNS) to a dead address and back.
#[test]
fn a_udp_client_follows_its_service_when_the_endpoint_changes() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let node = get_json(&s, &["nodes"]).expect("nodes")["items"][0]["metadata"]["name"]
        .as_str()
        .expect("node name")
        .to_string();
    // The node's DNS listens on its bridge gateway (the kube-dns slice names it).
    let dns = wait_for("the node's kube-dns slice", Duration::from_secs(60), || {
        let slice = get_json(
            &s,
            &[
                "endpointslice",
                &format!("kube-dns-{node}"),
                "-n",
                "kube-system",
            ],
        )?;
        slice["endpoints"][0]["addresses"][0]
            .as_str()
            .map(str::to_string)
    });
    // An address in the node's pod range that nothing holds: packets there are lost.
    let dead = {
        let mut octets: Vec<&str> = dns.split('.').collect();
        octets[3] = "250";
        octets.join(".")
    };
    let udp = |address: &str| {
        format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: udp-dns}}
spec:
  ports: [{{name: dns, port: 5353, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: udp-dns-1
  labels: {{kubernetes.io/service-name: udp-dns}}
addressType: IPv4
endpoints: [{{addresses: ["{address}"], conditions: {{ready: true}}}}]
ports: [{{name: dns, port: 53, protocol: UDP}}]
"#
        )
    };
    apply(&s, &udp(&dns));
    let vip = cluster_ip(&s, "udp-dns");
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    sock.connect(format!("{vip}:5353")).expect("connect");
    let mut id = 0u16;
    wait_for(
        "the Service to answer over UDP",
        Duration::from_secs(30),
        || answered(&sock, &mut id).then_some(()),
    );

    // The endpoint moves to a dead address: the same socket's queries go there at once
    // (with the old flow kept they would still be answered by the DNS).
    apply(&s, &udp(&dead));
    let moved = Instant::now();
    wait_for(
        "queries from the same socket to stop being answered",
        Duration::from_secs(10),
        || (!answered(&sock, &mut id) && !answered(&sock, &mut id)).then_some(()),
    );
    // And back: the flow to the dead address, refreshed by every query, is cleared too.
    apply(&s, &udp(&dns));
    wait_for(
        "queries from the same socket to be answered again",
        Duration::from_secs(10),
        || answered(&sock, &mut id).then_some(()),
    );
    eprintln!(
        "UDP flow followed the endpoint away and back in {:?}",
        moved.elapsed()
    );
}
