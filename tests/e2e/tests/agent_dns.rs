//! Cluster DNS: pods resolve Services by name through the node agent's DNS server (reached at
//! the `kube-dns` ClusterIP through the Service proxy), per their resolv.conf's search path;
//! headless names give the pods' addresses (a StatefulSet's pods by their stable names),
//! missing names are NXDOMAIN, and dnsPolicy None
//! writes only the pod's dnsConfig. Each check runs in a real busybox pod and reads its log.

use std::time::Duration;

use capstan_e2e::{apply, get_json, node_ready, wait_for, Server};
use serde_json::Value;

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo served-by-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: www, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: www, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: db, image: busybox, command: ["sleep", "3600"]}
"#;

/// Each section starts with `== NAME` and ends with `rc=N` (the command's exit code). The
/// HTTP request goes by `nc` to the address `nslookup` resolved the name to: the image's
/// static busybox wget crashes in glibc's resolver (no NSS in the image), even for an
/// address.
const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: dns-client}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command:
    - sh
    - -c
    - |
      echo "== resolv"; cat /etc/resolv.conf; echo "rc=0"
      echo "== fqdn"; nslookup web.default.svc.cluster.local; echo "rc=$?"
      echo "== short"; nslookup web; echo "rc=$?"
      echo "== headless"; nslookup web-headless.default.svc.cluster.local; echo "rc=$?"
      echo "== missing"; nslookup nope.default.svc.cluster.local; echo "rc=$?"
      echo "== db-0"; nslookup db-0.db.default.svc.cluster.local; echo "rc=$?"
      echo "== db-1"; nslookup db-1.db.default.svc.cluster.local; echo "rc=$?"
      echo "== http"; ip=$(nslookup web.default.svc.cluster.local | awk '/^Address/ {a=$NF} END {print a}'); printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 "$ip" 80 | tail -n 1; echo "rc=$?"
---
apiVersion: v1
kind: Pod
metadata: {name: dns-none}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.1"]
    searches: ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers:
  - {name: c, image: busybox, command: ["cat", "/etc/resolv.conf"]}
"#;

/// The pod's log once it has finished.
fn finished_log(s: &Server, pod: &str) -> String {
    wait_for(
        &format!("pod {pod} to finish"),
        Duration::from_secs(120),
        || {
            let p = get_json(s, &["pod", pod])?;
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(())
        },
    );
    s.kubectl_ok(&["logs", pod])
}

/// The lines of the section `name` and its exit code.
fn section(log: &str, name: &str) -> (Vec<String>, i32) {
    let start = format!("== {name}");
    let mut lines = log.lines().skip_while(|l| *l != start).skip(1);
    let mut body = Vec::new();
    for line in lines.by_ref() {
        if let Some(rc) = line.strip_prefix("rc=") {
            return (body, rc.trim().parse().unwrap_or(-1));
        }
        body.push(line.to_string());
    }
    panic!("no complete section {name} in:\n{log}");
}

/// The addresses an nslookup section printed for its name (busybox: `Address: IP` after
/// `Name:`; the server's own address comes before).
fn answered(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    out.sort();
    out
}

fn ready_pod_ips(s: &Server, label: &str, want: usize) -> Vec<String> {
    wait_for(
        &format!("{want} ready pods labelled {label}"),
        Duration::from_secs(120),
        || {
            let list = get_json(s, &["pods", "-l", label])?;
            let pods: &Vec<Value> = list["items"].as_array()?;
            let ready = pods.iter().all(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            });
            if pods.len() != want || !ready {
                return None;
            }
            let mut ips: Vec<String> = pods
                .iter()
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
                .collect();
            ips.sort();
            (ips.len() == want).then_some(ips)
        },
    )
}

#[test]
fn pods_resolve_services_through_the_cluster_dns() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let dns = get_json(&s, &["service", "kube-dns", "-n", "kube-system"])
        .expect("the kube-dns Service is made at bootstrap");
    let dns_ip = dns["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    assert!(
        dns_ip.ends_with(".10"),
        "kube-dns at the range's tenth address: {dns_ip}"
    );
    assert!(
        dns["spec"]["selector"].is_null(),
        "kube-dns has no selector"
    );
    // The node's slice names its DNS server.
    wait_for(
        "the node's kube-dns EndpointSlice",
        Duration::from_secs(30),
        || {
            let slices = get_json(
                &s,
                &[
                    "endpointslices",
                    "-n",
                    "kube-system",
                    "-l",
                    "kubernetes.io/service-name=kube-dns",
                ],
            )?;
            let items = slices["items"].as_array()?;
            (items.len() == 1 && items[0]["endpoints"][0]["addresses"][0].is_string()).then_some(())
        },
    );

    apply(&s, WORKLOAD);
    let web_ip = get_json(&s, &["service", "web"]).expect("web")["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let pod_ips = ready_pod_ips(&s, "app=web", 2);
    // The StatefulSet's pods are ready (so their slice endpoints carry their hostnames)
    // before the client asks for their stable names.
    ready_pod_ips(&s, "app=db", 2);
    apply(&s, CLIENT);

    let log = finished_log(&s, "dns-client");
    let (resolv, _) = section(&log, "resolv");
    assert_eq!(
        resolv.first().map(String::as_str),
        Some(format!("nameserver {dns_ip}").as_str()),
        "{log}"
    );
    assert!(
        resolv
            .iter()
            .any(|l| l
                .starts_with("search default.svc.cluster.local svc.cluster.local cluster.local")),
        "{log}"
    );
    assert!(resolv.iter().any(|l| l == "options ndots:5"), "{log}");

    let (fqdn, rc) = section(&log, "fqdn");
    assert_eq!((rc, answered(&fqdn)), (0, vec![web_ip.clone()]), "{log}");
    // busybox nslookup asks every search domain and exits 1 when a later one is NXDOMAIN
    // (`web.cluster.local`); the first, `web.default.svc.cluster.local`, answered.
    let (short, _) = section(&log, "short");
    assert_eq!(answered(&short), vec![web_ip.clone()], "{log}");
    let (headless, rc) = section(&log, "headless");
    assert_eq!((rc, answered(&headless)), (0, pod_ips.clone()), "{log}");
    // The web Deployment answers HTTP by its Service's name, from a pod.
    let (http, rc) = section(&log, "http");
    assert_eq!(
        (rc, http.clone()),
        (0, vec!["served-by-web".to_string()]),
        "{log}"
    );
    let (missing, rc) = section(&log, "missing");
    assert_ne!(rc, 0, "{log}");
    assert!(
        missing
            .iter()
            .any(|l| l.contains("NXDOMAIN") || l.contains("can't find")),
        "{log}"
    );

    // A headless StatefulSet's pods by their stable names: `<pod>.<serviceName>.<ns>.svc…`.
    for name in ["db-0", "db-1"] {
        let ip = get_json(&s, &["pod", name]).expect("the set's pod")["status"]["podIP"]
            .as_str()
            .expect("podIP")
            .to_string();
        let (answer, rc) = section(&log, name);
        assert_eq!((rc, answered(&answer)), (0, vec![ip]), "{log}");
    }

    let none = finished_log(&s, "dns-none");
    assert_eq!(
        none,
        "nameserver 192.0.2.1\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
    );

    for pod in ["dns-client", "dns-none"] {
        s.kubectl_ok(&["delete", "pod", pod, "--wait=false"]);
    }
    s.kubectl_ok(&["delete", "deployment", "web", "--wait=false"]);
    s.kubectl_ok(&["delete", "statefulset", "db", "--wait=false"]);
    s.kubectl_ok(&["delete", "service", "web", "web-headless", "db"]);
}
