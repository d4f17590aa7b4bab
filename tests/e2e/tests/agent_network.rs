//! The node's packet rules seen from kubectl and from the host: a hostPort answers on
//! 127.0.0.1 and its rule goes with the pod, pods get service-link env vars and reach the
//! API through the `kubernetes` Service's ClusterIP, and pods reach addresses beyond the node.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_e2e::{apply, get_json, node_ready, pod_netns, wait_for, Server};
use serde_json::Value;

fn wait_phase(s: &Server, name: &str, want: &str) -> Value {
    wait_for(
        &format!("pod {name} to be {want}"),
        Duration::from_secs(90),
        || {
            let p = get_json(s, &["pod", name])?;
            assert_ne!(
                (p["status"]["phase"].as_str(), want),
                (Some("Failed"), "Succeeded"),
                "pod {name} failed: {p}\nlogs: {}",
                String::from_utf8_lossy(&s.kubectl(&["logs", name]).stdout)
            );
            (p["status"]["phase"] == want).then_some(p)
        },
    )
}

/// A number that differs between test processes and runs (ports, addresses, names).
fn salt() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(7919) ^ (nanos >> 10)
}

/// One HTTP GET over a fresh connection; the whole answer, or None if none came.
fn http_get(addr: SocketAddrV4) -> Option<String> {
    let mut conn = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Whether any nftables rule on the host carries the pod's hostPort comment.
fn host_port_rule_exists(uid: &str) -> bool {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("run nft");
    assert!(out.status.success(), "nft list ruleset: {out:?}");
    String::from_utf8_lossy(&out.stdout).contains(&format!("hostport pod {uid}"))
}

#[test]
fn host_port_answers_on_loopback_and_its_rule_goes_with_the_pod() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let host_port = 20000 + (salt() % 20000) as u16;
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-hostport > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: [{{containerPort: 80, hostPort: {host_port}}}]
"#
        ),
    );
    let p = wait_phase(&s, "web", "Running");
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port);
    let answer = wait_for(
        "the hostPort to answer on 127.0.0.1",
        Duration::from_secs(30),
        || http_get(addr).filter(|a| a.contains("hello-from-hostport")),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        host_port_rule_exists(&uid),
        "no nftables rule for pod {uid}"
    );

    s.kubectl_ok(&["delete", "pod", "web", "--timeout=60s"]);
    wait_for("the hostPort rule to go", Duration::from_secs(30), || {
        (!host_port_rule_exists(&uid)).then_some(())
    });
    let refused = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "127.0.0.1:{host_port} still answers after the pod went"
    );
}

#[test]
fn pods_get_service_links_and_reach_the_api_through_the_kubernetes_service() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web-front}
spec:
  selector: {app: none}
  ports: [{name: http, port: 8080, targetPort: 80}]
"#,
    );
    let svc = get_json(&s, &["service", "web-front"]).expect("service");
    let svc_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let kube = get_json(&s, &["service", "kubernetes"]).expect("kubernetes service");
    let kube_ip = kube["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox
    env: [{name: OWN, value: "$(KUBERNETES_SERVICE_PORT)-mine"}]
    command: ["sh", "-c", "env | sort; exec sleep 3600"]
"#,
    );
    let p = wait_phase(&s, "client", "Running");
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let logs = wait_for("the client's env", Duration::from_secs(30), || {
        let out = s.kubectl(&["logs", "client"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("KUBERNETES_SERVICE_HOST=").then_some(text)
    });
    for want in [
        format!("KUBERNETES_SERVICE_HOST={kube_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_string(),
        format!("KUBERNETES_PORT=tcp://{kube_ip}:443"),
        format!("KUBERNETES_PORT_443_TCP_ADDR={kube_ip}"),
        format!("WEB_FRONT_SERVICE_HOST={svc_ip}"),
        "WEB_FRONT_SERVICE_PORT_HTTP=8080".to_string(),
        format!("WEB_FRONT_PORT_8080_TCP=tcp://{svc_ip}:8080"),
        "OWN=443-mine".to_string(),
    ] {
        assert!(logs.lines().any(|l| l == want), "no {want} in:\n{logs}");
    }
    // GET /version at the ClusterIP from the pod's own network namespace (its address, its
    // route via the bridge). The TLS client is the host's curl: busybox 1.35's built-in TLS
    // sends no signature_algorithms extension, so it can complete a TLS 1.2 handshake only
    // with servers that sign with SHA-1, which rustls (the API server's TLS) never does.
    let netns = pod_netns(&uid);
    let url = format!("https://{kube_ip}:443/version");
    let body = wait_for(
        "/version through the ClusterIP",
        Duration::from_secs(30),
        || {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["curl", "-sk", "--max-time", "5", &url])
                .output()
                .expect("run nsenter curl");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    let version: Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "--raw", "/version"])).expect("version JSON");
    let served: Value = serde_json::from_str(&body).expect("the pod's /version is JSON");
    assert_eq!(served["gitVersion"], version["gitVersion"], "{body}");

    // With enableServiceLinks: false only the master Service's variables remain.
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: unlinked}
spec:
  restartPolicy: Never
  enableServiceLinks: false
  containers:
  - {name: c, image: busybox, command: ["env"]}
"#,
    );
    wait_phase(&s, "unlinked", "Succeeded");
    let env = s.kubectl_ok(&["logs", "unlinked"]);
    assert!(env.contains("KUBERNETES_SERVICE_HOST="), "{env}");
    assert!(!env.contains("WEB_FRONT_"), "{env}");
    s.kubectl_ok(&["delete", "pod", "client", "unlinked", "--timeout=60s"]);
}

/// A network namespace joined to the host by a veth pair, serving HTTP on its end; all of
/// it goes on drop.
struct Outside {
    netns: String,
    server: Option<Child>,
    _www: tempfile::TempDir,
    addr: SocketAddrV4,
}

impl Outside {
    fn start(tag: u32) -> Outside {
        let netns = format!("capt{:x}", tag & 0x00ff_ffff);
        let host_end = format!("cvh{:x}", tag & 0x00ff_ffff);
        let peer = format!("cvn{:x}", tag & 0x00ff_ffff);
        // 10.250.0.0/16 is outside the test servers' pod CIDRs (10.200–249.x.0/24).
        let (a, b) = ((tag >> 8) % 256, (tag % 64) * 4);
        let host_ip = format!("10.250.{a}.{}", b + 1);
        let ns_ip = Ipv4Addr::new(10, 250, a as u8, (b + 2) as u8);
        let www = tempfile::tempdir().expect("tempdir");
        std::fs::write(www.path().join("index.html"), "hello-from-outside\n").expect("page");
        let mut o = Outside {
            netns: netns.clone(),
            server: None,
            _www: www,
            addr: SocketAddrV4::new(ns_ip, 8080),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &netns, "link", "set", &peer, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args(["netns", "exec", &netns, "busybox", "httpd", "-f", "-p"])
            .arg(format!("{ns_ip}:8080"))
            .arg("-h")
            .arg(o._www.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start httpd in the namespace");
        o.server = Some(server);
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The veth pair goes with the namespace that holds one end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[test]
fn pods_reach_a_listener_beyond_the_node_through_egress_masquerade() {
    let outside = Outside::start(salt());
    let s = Server::start_node(&[]);
    node_ready(&s);
    let url = format!("http://{}/index.html", outside.addr);
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: egress}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- {url} && exit 0; sleep 1; done; exit 1"]
"#
        ),
    );
    wait_phase(&s, "egress", "Succeeded");
    let logs = s.kubectl_ok(&["logs", "egress"]);
    assert!(logs.contains("hello-from-outside"), "{logs}");
    s.kubectl_ok(&["delete", "pod", "egress", "--timeout=60s"]);
}
