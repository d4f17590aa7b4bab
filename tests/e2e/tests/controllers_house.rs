//! The cluster housekeeping loops through kubectl and kube-rs against the built binary:
//! namespace lifecycle, default ServiceAccount and root CA, EndpointSlices/Endpoints, node
//! lifecycle with taint eviction, pod GC, ResourceQuota and LimitRange admission.

use std::time::{Duration, Instant};

use capstan_e2e::kube_client as client;
use capstan_e2e::Server;
use capstan_e2e::{apply, get_json, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::Api;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

/// Poll `f` until it returns Some, or fail naming what was awaited.
/// A pod labelled `app=web` serving `http` on 8080, ready after `ready_after` seconds.
fn web_pod(name: &str, node: &str, ready_after: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: nginx
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, initialDelaySeconds: {ready_after}}}
"#
    )
}

const WEB_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

#[test]
fn a_new_namespace_gets_the_default_service_account_and_the_root_ca() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "team"]);
    wait_for("the default ServiceAccount", WITHIN, || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    });
    let ca = wait_for("kube-root-ca.crt", WITHIN, || {
        let out = s.kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "team",
            "-o",
            r"jsonpath={.data.ca\.crt}",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // The same CA the kubeconfig trusts.
    let kc = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    let first_line = ca.lines().nth(1).expect("a PEM body");
    let data = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("CA data in the kubeconfig");
    let decoded = String::from_utf8(
        std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(data.as_bytes())?;
                c.wait_with_output()
            })
            .expect("base64")
            .stdout,
    )
    .expect("utf8");
    assert!(
        decoded.contains(first_line),
        "published CA differs from the server's"
    );
    // A deleted default account comes back.
    s.kubectl_ok(&["delete", "serviceaccount", "default", "-n", "team"]);
    wait_for("the default ServiceAccount again", WITHIN, || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    });
    // A pod naming an account that does not exist is refused, as upstream.
    let out = s.kubectl(&[
        "run",
        "p",
        "-n",
        "team",
        "--image=nginx",
        "--overrides={\"spec\":{\"serviceAccountName\":\"robot\"}}",
    ]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"pods "p" is forbidden: error looking up service account team/robot: serviceaccount "robot" not found"#),
        "{err}"
    );
}

#[test]
fn deleting_a_namespace_empties_and_removes_it() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "doomed"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "x",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    s.kubectl_ok(&["create", "deployment", "d", "-n", "doomed", "--image=nginx"]);
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "svc",
        "-n",
        "doomed",
        "--tcp=80",
    ]);
    s.kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"]);
    wait_for("the namespace to go", WITHIN, || {
        let out = s.kubectl(&["get", "namespace", "doomed"]);
        let (_, err) = capstan_e2e::text(&out);
        (!out.status.success() && err.contains("NotFound")).then_some(())
    });
    // Re-created empty: nothing of the old contents is left.
    s.kubectl_ok(&["create", "namespace", "doomed"]);
    let left = s.kubectl_ok(&[
        "get",
        "configmaps,secrets,deployments,services",
        "-n",
        "doomed",
        "-o",
        "name",
    ]);
    assert!(
        !left.contains("configmap/c")
            && !left.contains("deployment")
            && !left.contains("service/svc"),
        "{left}"
    );
}

#[test]
fn a_namespace_with_a_lingering_pod_reports_what_remains() {
    let s = Server::start_args(&["--simulated-nodes", "1"]);
    s.kubectl_ok(&["create", "namespace", "slow"]);
    wait_for("the default ServiceAccount", WITHIN, || {
        s.kubectl(&["get", "sa", "default", "-n", "slow"])
            .status
            .success()
            .then_some(())
    });
    // A pod whose kubelet takes its time (3 s grace) holds the namespace Terminating.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: slow}\nspec:\n  nodeName: sim-node-0\n  terminationGracePeriodSeconds: 3\n  containers: [{name: a, image: nginx}]\n",
    );
    wait_for("the pod to run", WITHIN, || {
        let p = get_json(&s, &["pod", "p", "-n", "slow"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    s.kubectl_ok(&["delete", "namespace", "slow", "--wait=false"]);
    let ns = wait_for("NamespaceContentRemaining", WITHIN, || {
        let ns = get_json(&s, &["namespace", "slow"])?;
        let conds = ns["status"]["conditions"].as_array()?.clone();
        conds
            .iter()
            .any(|c| c["type"] == "NamespaceContentRemaining" && c["status"] == "True")
            .then_some(ns)
    });
    assert_eq!(ns["status"]["phase"], "Terminating");
    let conds = ns["status"]["conditions"].as_array().expect("conditions");
    let remaining = conds
        .iter()
        .find(|c| c["type"] == "NamespaceContentRemaining")
        .expect("condition");
    assert_eq!(remaining["reason"], "SomeResourcesRemain");
    assert!(
        remaining["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pods has 1 resource instances"),
        "{remaining}"
    );
    assert!(conds
        .iter()
        .any(|c| c["type"] == "NamespaceDeletionDiscoveryFailure" && c["status"] == "False"));
    wait_for("the namespace to go", WITHIN, || {
        (!s.kubectl(&["get", "namespace", "slow"]).status.success()).then_some(())
    });
}

/// `capstan controller-manager` against a server running no loops of its own: with no
/// `--root-ca-file` it publishes the CA its kubeconfig trusts, as upstream's does.
#[test]
fn the_stand_alone_controller_manager_publishes_its_kubeconfigs_ca() {
    let s = Server::start_args(&["--disable-controllers"]);
    let mut cm = std::process::Command::new(capstan_e2e::capstan_bin())
        .args(["controller-manager", "--kubeconfig"])
        .arg(s.kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn capstan controller-manager");
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reap = Reap(&mut cm);
    s.kubectl_ok(&["create", "namespace", "solo"]);
    let published = wait_for(
        "kube-root-ca.crt from the stand-alone loops",
        WITHIN,
        || {
            let out = s.kubectl(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                "solo",
                "-o",
                r"jsonpath={.data.ca\.crt}",
            ]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    let server_ca = std::fs::read_to_string(s.data_dir.join("pki").join("ca.crt")).expect("ca.crt");
    let body = |pem: &str| -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    assert!(
        published.starts_with("-----BEGIN CERTIFICATE-----"),
        "{published}"
    );
    assert_eq!(
        body(&published),
        body(&server_ca),
        "published CA differs from the server's"
    );
}

#[test]
fn without_controllers_a_deleted_namespace_stays_terminating() {
    let s = Server::start_args(&["--disable-controllers"]);
    s.kubectl_ok(&["create", "namespace", "kept"]);
    s.kubectl_ok(&["delete", "namespace", "kept", "--wait=false"]);
    // Nothing finishes it, as upstream without a controller-manager (bounded look).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let out = s.kubectl_ok(&["get", "namespace", "kept", "--no-headers"]);
        assert!(out.contains("Terminating"), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Terminated pods beyond `--terminated-pod-gc-threshold` go, oldest first.
#[test]
fn terminated_pods_beyond_the_threshold_are_collected_oldest_first() {
    let s = Server::start_args(&[
        "--simulated-nodes",
        "1",
        "--terminated-pod-gc-threshold",
        "2",
    ]);
    for i in 0..4 {
        apply(
            &s,
            &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: done-{i}\n  annotations: {{sim.capstan.io/exit-after: \"100ms\", sim.capstan.io/exit-code: \"0\"}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: c, image: busybox}}]\n"),
        );
    }
    // A pass runs every 20 s (upstream's period): within two of them.
    let left = wait_for("two terminated pods left", Duration::from_secs(60), || {
        let out = s.kubectl_ok(&[
            "get",
            "pods",
            "--no-headers",
            "-o",
            "custom-columns=N:.metadata.name,P:.status.phase",
        ]);
        let rows: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        (rows.len() == 2 && rows.iter().all(|r| r.ends_with("Succeeded"))).then_some(rows)
    });
    assert_eq!(left, ["done-2 Succeeded", "done-3 Succeeded"]);
}

/// `kubectl get endpoints web` ENDPOINTS column.
fn endpoints_column(s: &Server) -> String {
    let out = s.kubectl_ok(&["get", "endpoints", "web", "--no-headers"]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn pod_ip(s: &Server, pod: &str) -> String {
    wait_for(&format!("{pod}'s IP"), WITHIN, || {
        let p = get_json(s, &["pod", pod])?;
        p["status"]["podIP"].as_str().map(String::from)
    })
}

#[test]
fn a_services_endpoint_slice_and_endpoints_follow_its_ready_pods() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply(&s, WEB_SERVICE);
    apply(&s, &web_pod("web-a", "sim-node-0", 0));
    // Never ready within the test (an hour's delay): listed as not ready throughout, so
    // the first state below cannot be missed on a slow machine.
    apply(&s, &web_pod("web-b", "sim-node-1", 3600));
    // Not part of the Service: a different label.
    apply(
        &s,
        &web_pod("other", "sim-node-0", 0).replace("app: web", "app: other"),
    );
    let a = pod_ip(&s, "web-a");
    let b = pod_ip(&s, "web-b");
    // web-a is ready first: the Endpoints list it alone; web-b waits as not ready.
    wait_for("Endpoints with web-a only", WITHIN, || {
        (endpoints_column(&s) == format!("{a}:8080")).then_some(())
    });
    let ep = get_json(&s, &["endpoints", "web"]).expect("endpoints");
    let subset = &ep["subsets"][0];
    assert_eq!(subset["ports"][0]["port"], 8080);
    assert_eq!(subset["ports"][0]["name"], "http");
    assert_eq!(subset["notReadyAddresses"][0]["ip"], b.as_str(), "{ep}");
    assert_eq!(subset["addresses"][0]["targetRef"]["name"], "web-a");
    assert_eq!(subset["addresses"][0]["nodeName"], "sim-node-0");
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );
    // The slice: both pods, web-b not yet ready, the named port resolved.
    let slices = s.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "--no-headers",
    ]);
    let cols: Vec<&str> = slices.split_whitespace().collect();
    assert_eq!(cols[1], "IPv4", "{slices}");
    assert_eq!(cols[2], "8080", "{slices}");
    let slice = &get_json(
        &s,
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
    )
    .expect("slices")["items"][0];
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    let eps = slice["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2, "{slice}");
    let of = |ip: &str| {
        eps.iter()
            .find(|e| e["addresses"][0] == ip)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        of(&a)["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(of(&b)["conditions"]["ready"], false, "{slice}");
    assert_eq!(of(&a)["targetRef"]["kind"], "Pod");
    assert_eq!(of(&a)["nodeName"], "sim-node-0");
    // web-c joins not ready and becomes ready after 2 s: then both ready pods are listed.
    apply(&s, &web_pod("web-c", "sim-node-1", 2));
    let c = pod_ip(&s, "web-c");
    wait_for("Endpoints with web-a and web-c", WITHIN, || {
        let col = endpoints_column(&s);
        (col.contains(&format!("{a}:8080")) && col.contains(&format!("{c}:8080"))).then_some(())
    });
    // web-a goes: it leaves the Endpoints at once, and the slice once it is gone.
    s.kubectl_ok(&["delete", "pod", "web-a", "--wait=false"]);
    wait_for("Endpoints without web-a", WITHIN, || {
        (endpoints_column(&s) == format!("{c}:8080")).then_some(())
    });
    wait_for("the slice without web-a", WITHIN, || {
        let sl = get_json(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let eps = sl["items"][0]["endpoints"].as_array()?.clone();
        let mut ips: Vec<&str> = eps
            .iter()
            .filter_map(|e| e["addresses"][0].as_str())
            .collect();
        ips.sort_unstable();
        let mut want = vec![b.as_str(), c.as_str()];
        want.sort_unstable();
        (ips == want).then_some(())
    });
    // A Service without a selector is the user's: no slice, no Endpoints from us.
    s.kubectl_ok(&["create", "service", "clusterip", "manual", "--tcp=80"]);
    s.kubectl_ok(&[
        "patch",
        "service",
        "manual",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector"}]"#,
    ]);
    apply(&s, "apiVersion: v1\nkind: Endpoints\nmetadata: {name: manual}\nsubsets: [{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]\n");
    std::thread::sleep(Duration::from_millis(300));
    let manual = get_json(&s, &["endpoints", "manual"]).expect("manual endpoints");
    assert_eq!(manual["subsets"][0]["addresses"][0]["ip"], "192.0.2.1");
    // The kubernetes Service points at the API server.
    let k8s = get_json(&s, &["service", "kubernetes"]).expect("kubernetes service");
    assert_eq!(k8s["spec"]["ports"][0]["targetPort"], json!(s.port));
    let api = s.kubectl_ok(&["get", "endpoints", "kubernetes", "--no-headers"]);
    assert_eq!(
        api.split_whitespace().nth(1),
        Some(format!("127.0.0.1:{}", s.port).as_str()),
        "{api}"
    );
}

#[test]
fn publish_not_ready_addresses_and_headless_services() {
    let s = Server::start_args(&["--simulated-nodes", "1"]);
    apply(
        &s,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    // Never ready within the test, yet published.
    apply(&s, &web_pod("slow", "sim-node-0", 600));
    let ip = pod_ip(&s, "slow");
    wait_for("the not-ready pod published", WITHIN, || {
        (endpoints_column(&s) == format!("{ip}:8080")).then_some(())
    });
    let ep = get_json(&s, &["endpoints", "web"]).expect("endpoints");
    assert_eq!(
        ep["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    let slice = wait_for("the slice", WITHIN, || {
        let sl = get_json(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let item = sl["items"][0].clone();
        (item["endpoints"].as_array()?.len() == 1).then_some(item)
    });
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(
        slice["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
}

#[test]
fn slices_hold_at_most_the_maximum_endpoints() {
    let s = Server::start_args(&["--simulated-nodes", "1", "--max-endpoints-per-slice", "2"]);
    apply(&s, WEB_SERVICE);
    for i in 0..5 {
        apply(&s, &web_pod(&format!("web-{i}"), "sim-node-0", 0));
    }
    let sizes = wait_for("three slices of 2, 2 and 1", WITHIN, || {
        let sl = get_json(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let mut sizes: Vec<usize> = sl["items"]
            .as_array()?
            .iter()
            .map(|i| i["endpoints"].as_array().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        (sizes.iter().sum::<usize>() == 5).then_some(sizes)
    });
    assert_eq!(sizes, [1, 2, 2]);
}

const MIRRORED: &str = "kubernetes.io/service-name=ext,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io";

/// The mirrored slices of Service `ext`, once `done` holds for them.
fn mirrored(s: &Server, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, WITHIN, || {
        let sl = get_json(s, &["endpointslices", "-l", MIRRORED])?;
        let items = sl["items"].as_array()?.clone();
        done(&items).then_some(items)
    })
}

fn addresses(slice: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                e["conditions"]["ready"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

const EXT_SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  ports: [{name: http, port: 80}]\n";

#[test]
fn hand_written_endpoints_are_mirrored_to_endpoint_slices() {
    let s = Server::start();
    apply(&s, EXT_SERVICE);
    apply(
        &s,
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: ext\n  labels: {team: a}\n  annotations: {note: kept}\nsubsets:\n- addresses: [{ip: 10.9.0.1, hostname: one}, {ip: 10.9.0.2}]\n  notReadyAddresses: [{ip: 10.9.0.3}]\n  ports: [{name: http, port: 8080}]\n- addresses: [{ip: 'fd00::9'}]\n  ports: [{name: http, port: 8080}]\n",
    );
    let slices = mirrored(&s, "an IPv4 and an IPv6 slice", |items| items.len() == 2);
    let v4 = slices
        .iter()
        .find(|i| i["addressType"] == "IPv4")
        .expect("an IPv4 slice");
    assert_eq!(
        addresses(v4),
        [
            ("10.9.0.1".to_string(), true),
            ("10.9.0.2".to_string(), true),
            ("10.9.0.3".to_string(), false)
        ],
        "{v4}"
    );
    assert_eq!(
        v4["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(v4["metadata"]["labels"]["team"], "a");
    assert_eq!(v4["metadata"]["annotations"]["note"], "kept");
    assert!(v4["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .is_none());
    let owner = &v4["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Endpoints"), Some("ext"))
    );
    assert!(v4["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .starts_with("ext-"));
    let v6 = slices
        .iter()
        .find(|i| i["addressType"] == "IPv6")
        .expect("an IPv6 slice");
    assert_eq!(addresses(v6), [("fd00::9".to_string(), true)]);

    // An address removed from the Endpoints leaves the same slice.
    let v4_name = v4["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    s.kubectl_ok(&[
        "patch",
        "endpoints",
        "ext",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/subsets/0/addresses/1"}]"#,
    ]);
    let slices = mirrored(&s, "10.9.0.2 gone", |items| {
        items.iter().any(|i| {
            i["addressType"] == "IPv4" && i["endpoints"].as_array().map_or(0, Vec::len) == 2
        })
    });
    let v4 = slices
        .iter()
        .find(|i| i["addressType"] == "IPv4")
        .expect("v4");
    assert_eq!(v4["metadata"]["name"], v4_name.as_str());

    // A mirrored slice deleted by hand comes back.
    s.kubectl_ok(&["delete", "endpointslice", &v4_name]);
    mirrored(&s, "the IPv4 slice put back", |items| {
        items
            .iter()
            .any(|i| i["addressType"] == "IPv4" && i["metadata"]["name"] != v4_name.as_str())
    });

    // Opting out removes the slices; opting back in restores them.
    s.kubectl_ok(&[
        "label",
        "endpoints",
        "ext",
        "endpointslice.kubernetes.io/skip-mirror=true",
    ]);
    mirrored(&s, "no slices while skip-mirror", <[Value]>::is_empty);
    s.kubectl_ok(&[
        "label",
        "endpoints",
        "ext",
        "endpointslice.kubernetes.io/skip-mirror-",
    ]);
    mirrored(&s, "slices again", |items| items.len() == 2);

    // Without the Service there is nothing to mirror for.
    s.kubectl_ok(&["delete", "service", "ext"]);
    mirrored(&s, "no slices without the service", <[Value]>::is_empty);
    apply(&s, EXT_SERVICE);
    mirrored(&s, "slices with the service back", |items| items.len() == 2);
    // Deleting the Endpoints takes their slices with them.
    s.kubectl_ok(&["delete", "endpoints", "ext"]);
    mirrored(&s, "no slices without the endpoints", <[Value]>::is_empty);
}

#[test]
fn a_stopped_node_goes_unknown_is_tainted_and_its_pods_are_evicted() {
    let s = Server::start_args(&[
        "--simulated-nodes",
        "2",
        "--node-lease-duration-seconds",
        "2",
        // 2 s Leases renewed within 5 s of grace: no healthy-node flap on a loaded machine.
        "--node-monitor-grace-period",
        "5s",
    ]);
    // Tolerates unreachability for 1 s (the default admission would give 300 s).
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: short}\nspec:\n  nodeName: sim-node-0\n  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n  containers: [{name: a, image: nginx}]\n",
    );
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: patient}\nspec:\n  nodeName: sim-node-0\n  containers: [{name: a, image: nginx}]\n",
    );
    // A Deployment whose pods tolerate unreachability for 1 s: replaced elsewhere by its
    // ReplicaSet once the taint manager evicts them.
    apply(
        &s,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: moved}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: moved}}\n  template:\n    metadata: {labels: {app: moved}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n      containers: [{name: a, image: nginx}]\n",
    );
    wait_for("all 6 pods ready", WITHIN, || {
        let out = s.kubectl_ok(&["get", "pods", "--no-headers"]);
        (out.lines().filter(|l| l.contains("1/1")).count() == 6).then_some(())
    });
    let on_stopped = moved_pods(&s)
        .iter()
        .filter(|(node, _)| node == "sim-node-0")
        .count();
    assert!(
        on_stopped > 0,
        "no moved pod on sim-node-0: {:?}",
        moved_pods(&s)
    );
    // Healthy nodes stay Ready past the grace period (their Leases are renewed).
    std::thread::sleep(Duration::from_secs(6));
    let nodes = s.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert!(!nodes.contains("NotReady"), "{nodes}");
    s.kubectl_ok(&[
        "annotate",
        "node",
        "sim-node-0",
        "sim.capstan.io/stopped=true",
    ]);
    let node = wait_for("sim-node-0 Ready=Unknown", WITHIN, || {
        let n = get_json(&s, &["node", "sim-node-0"])?;
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] == "Unknown").then_some(n)
    });
    let ready = node["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .expect("Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let taints = wait_for("the unreachable taints", WITHIN, || {
        let n = get_json(&s, &["node", "sim-node-0"])?;
        let t = n["spec"]["taints"].as_array()?.clone();
        (t.len() == 2).then_some(t)
    });
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            taints
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == effect),
            "{taints:?}"
        );
    }
    let listed = s.kubectl_ok(&["get", "node", "sim-node-0", "--no-headers"]);
    assert!(listed.contains("NotReady"), "{listed}");
    // The 1 s pod is marked and deleted (its stopped kubelet cannot finish it: Terminating).
    // Terminating, or already gone if the simulator finished it before it saw its node stop
    // (a race under load): the taint manager's event says it was evicted either way.
    let short = wait_for(
        "the short-tolerating pod evicted",
        WITHIN,
        || match get_json(&s, &["pod", "short"]) {
            Some(p) => p["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(Some(p)),
            None => Some(None),
        },
    );
    if let Some(short) = short {
        let disruption = short["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
            .expect("DisruptionTarget");
        assert_eq!(disruption["reason"], "DeletionByTaintManager");
    }
    wait_for("the TaintManagerEviction event", WITHIN, || {
        let ev = s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=short",
        ]);
        ev.contains("Marking for deletion Pod default/short")
            .then_some(())
    });
    // The other pod keeps its 300 s, but is no longer Ready.
    let patient = wait_for("the patient pod not Ready", WITHIN, || {
        let p = get_json(&s, &["pod", "patient"])?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False");
        ready.then_some(p)
    });
    assert!(
        patient["metadata"]["deletionTimestamp"].is_null(),
        "{patient}"
    );
    // The Deployment's pods from the stopped node were replaced on the other one.
    let placed = wait_for("4 moved pods Running on sim-node-1", WITHIN, || {
        let p = moved_pods(&s);
        (p.len() == 4
            && p.iter()
                .all(|(node, phase)| node == "sim-node-1" && phase == "Running"))
        .then_some(p)
    });
    assert_eq!(placed.len(), 4);
    wait_for("the deployment available again", WITHIN, || {
        let d = get_json(&s, &["deployment", "moved"])?;
        (d["status"]["availableReplicas"] == 4).then_some(())
    });
    // Back: the taints go.
    s.kubectl_ok(&["annotate", "node", "sim-node-0", "sim.capstan.io/stopped-"]);
    wait_for("the taints removed", WITHIN, || {
        let n = get_json(&s, &["node", "sim-node-0"])?;
        n["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
            .then_some(())
    });
}

/// The keys of a node's taints with `effect`.
fn taint_keys(s: &Server, node: &str, effect: &str) -> Vec<String> {
    get_json(s, &["node", node])
        .and_then(|n| n["spec"]["taints"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|t| t["effect"] == effect)
        .filter_map(|t| t["key"].as_str().map(String::from))
        .collect()
}

/// Every node Ready=Unknown with the node controller's unreachable NoSchedule taint.
fn all_unreachable(s: &Server, nodes: &[impl AsRef<str>]) -> bool {
    nodes.iter().map(AsRef::as_ref).all(|n| {
        ready_status(s, n) == "Unknown"
            && taint_keys(s, n, "NoSchedule") == ["node.kubernetes.io/unreachable"]
    })
}

fn ready_status(s: &Server, node: &str) -> String {
    get_json(s, &["node", node])
        .and_then(|n| {
            n["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str().map(String::from))
        })
        .unwrap_or_default()
}

/// Loops on the shared informers look at what exists when they start, not only at what
/// changes afterwards: nodes whose (simulated) kubelets are gone across a restart go Unknown
/// after the grace period — before, no loop looked at them and they stayed Ready.
#[test]
fn after_a_restart_nodes_without_a_kubelet_go_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_with_args(dir.path(), &["--simulated-nodes", "2"]);
    let nodes = ["sim-node-0", "sim-node-1"];
    wait_for("2 Ready nodes", WITHIN, || {
        nodes
            .iter()
            .all(|n| ready_status(&s, n) == "True")
            .then_some(())
    });
    s.kill();
    let s = Server::start_with_args(dir.path(), &["--node-monitor-grace-period", "3s"]);
    assert!(nodes.iter().all(|n| ready_status(&s, n) == "True"));
    wait_for("both nodes Unknown and tainted unreachable", WITHIN, || {
        all_unreachable(&s, &nodes).then_some(())
    });
}

/// Upstream's disruption handling: with every node down the fault is likelier the control
/// plane's, so no node gets the NoExecute taint that evicts; with most of a small zone down
/// none either; with one of four down it is tainted again.
#[test]
fn no_evicting_taints_while_every_node_or_most_of_a_small_zone_is_down() {
    let s = Server::start_args(&[
        "--simulated-nodes",
        "4",
        "--node-lease-duration-seconds",
        "2",
        "--node-monitor-grace-period",
        "5s",
        // Fast enough that a wrongly admitted taint would show within the looks below.
        "--node-eviction-rate",
        "10",
    ]);
    let nodes: Vec<String> = (0..4).map(|i| format!("sim-node-{i}")).collect();
    wait_for("4 Ready nodes", WITHIN, || {
        nodes
            .iter()
            .all(|n| ready_status(&s, n) == "True")
            .then_some(())
    });
    s.kubectl_ok(&["annotate", "nodes", "--all", "sim.capstan.io/stopped=true"]);
    wait_for("every node Unknown and NoSchedule-tainted", WITHIN, || {
        all_unreachable(&s, &nodes).then_some(())
    });
    // A node that went first may have been tainted before the last went; none keeps it.
    wait_for("no NoExecute taint with every node down", WITHIN, || {
        nodes
            .iter()
            .all(|n| taint_keys(&s, n, "NoExecute").is_empty())
            .then_some(())
    });
    let look = |what: &str, down: &[String]| {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            for n in down {
                assert!(
                    taint_keys(&s, n, "NoExecute").is_empty(),
                    "{n} got a NoExecute taint {what}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    look("with every node down", &nodes);
    // One back: 3 of 4 down is a partial disruption of a small zone, which stops tainting.
    s.kubectl_ok(&["annotate", "node", "sim-node-0", "sim.capstan.io/stopped-"]);
    wait_for("sim-node-0 Ready", WITHIN, || {
        (ready_status(&s, "sim-node-0") == "True").then_some(())
    });
    look("with 3 of 4 down", &nodes[1..]);
    // Two more back: one of four down is normal; the last gets its NoExecute taint.
    s.kubectl_ok(&["annotate", "node", "sim-node-1", "sim.capstan.io/stopped-"]);
    s.kubectl_ok(&["annotate", "node", "sim-node-2", "sim.capstan.io/stopped-"]);
    wait_for("sim-node-3 tainted NoExecute", WITHIN, || {
        (taint_keys(&s, "sim-node-3", "NoExecute") == ["node.kubernetes.io/unreachable"])
            .then_some(())
    });
    for n in &nodes[..3] {
        assert_eq!(ready_status(&s, n), "True", "{n}");
        assert!(taint_keys(&s, n, "NoExecute").is_empty(), "{n}");
    }
}

/// (node, phase) of each `app=moved` pod that is not terminating.
fn moved_pods(s: &Server) -> Vec<(String, String)> {
    get_json(s, &["pods", "-l", "app=moved"])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn pods_on_a_deleted_node_are_garbage_collected() {
    let s = Server::start_args(&["--simulated-nodes", "2"]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan}\nspec:\n  nodeName: sim-node-1\n  containers: [{name: a, image: nginx}]\n",
    );
    wait_for("the pod to run", WITHIN, || {
        let p = get_json(&s, &["pod", "orphan"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    s.kubectl_ok(&["delete", "node", "sim-node-1"]);
    wait_for("the orphaned pod to go", WITHIN, || {
        (!s.kubectl(&["get", "pod", "orphan"]).status.success()).then_some(())
    });
}

#[test]
fn a_quota_refuses_the_pod_beyond_it_and_describe_shows_usage() {
    let s = Server::start();
    s.kubectl_ok(&["create", "quota", "q", "--hard=pods=2,requests.cpu=1"]);
    wait_for("the quota's status", WITHIN, || {
        let q = get_json(&s, &["quota", "q"])?;
        (q["status"]["used"]["pods"] == "0").then_some(())
    });
    for p in ["p1", "p2"] {
        s.kubectl_ok(&["run", p, "--image=nginx", "--overrides={\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"nginx\",\"resources\":{\"requests\":{\"cpu\":\"100m\"}}}]}}"]);
    }
    let out = s.kubectl(&["run", "p3", "--image=nginx", "--overrides={\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"nginx\",\"resources\":{\"requests\":{\"cpu\":\"100m\"}}}]}}"]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"pods "p3" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#),
        "{err}"
    );
    // A pod that says nothing about cpu is refused by a cpu quota.
    let out = s.kubectl(&["run", "bare", "--image=nginx"]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains(
            r#"pods "bare" is forbidden: failed quota: q: must specify requests.cpu for: bare"#
        ),
        "{err}"
    );
    let described = wait_for("describe to show 2 of 2 pods", WITHIN, || {
        let d = s.kubectl_ok(&["describe", "quota", "q"]);
        d.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "2", "2"])
            .then_some(d)
    });
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["requests.cpu", "200m", "1"]),
        "{described}"
    );
    // Freed room is counted again.
    s.kubectl_ok(&["delete", "pod", "p1", "--grace-period=0", "--force"]);
    wait_for("used pods back to 1", WITHIN, || {
        let q = get_json(&s, &["quota", "q"])?;
        (q["status"]["used"]["pods"] == "1").then_some(())
    });
    s.kubectl_ok(&["run", "p3", "--image=nginx", "--overrides={\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"nginx\",\"resources\":{\"requests\":{\"cpu\":\"100m\"}}}]}}"]);
    // Object counts: configmaps.
    s.kubectl_ok(&["create", "quota", "cm", "--hard=configmaps=2"]);
    wait_for("the cm quota's status", WITHIN, || {
        let q = get_json(&s, &["quota", "cm"])?;
        q["status"]["used"]["configmaps"].as_str().map(|_| ())
    });
    let mut refused = None;
    for i in 0..3 {
        let out = s.kubectl(&["create", "configmap", &format!("c{i}")]);
        if !out.status.success() {
            refused = Some(capstan_e2e::text(&out).1);
            break;
        }
    }
    let err = refused.expect("one configmap refused");
    assert!(err.contains("exceeded quota: cm, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"), "{err}");
}

/// Scoped quotas (`--scopes`, `scopeSelector`) count and hold only the pods their scopes
/// match, in admission and in the controller's count; a scope the quota's resources do not
/// allow is refused at the door; claims' storage is counted by the controller too.
#[test]
fn scoped_quotas_count_only_what_their_scopes_match() {
    let s = Server::start();
    let sized = |name: &str, class: &str| {
        let class = if class.is_empty() {
            String::new()
        } else {
            format!(r#""priorityClassName":"{class}","#)
        };
        vec![
            "run".to_string(),
            name.to_string(),
            "--image=nginx".to_string(),
            format!(
                r#"--overrides={{"spec":{{{class}"containers":[{{"name":"c","image":"nginx","resources":{{"requests":{{"cpu":"100m"}}}}}}]}}}}"#
            ),
        ]
    };
    let run = |args: &[String]| s.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.kubectl_ok(&[
        "create",
        "quota",
        "be",
        "--hard=pods=1",
        "--scopes=BestEffort",
    ]);
    wait_for("the be quota's status", WITHIN, || {
        let q = get_json(&s, &["quota", "be"])?;
        (q["status"]["used"]["pods"] == "0").then_some(())
    });
    s.kubectl_ok(&["run", "free1", "--image=nginx"]);
    let out = s.kubectl(&["run", "free2", "--image=nginx"]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"pods "free2" is forbidden: exceeded quota: be, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );
    // A pod that asks for cpu is not best-effort: this quota neither holds nor counts it.
    let out = run(&sized("sized", ""));
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    s.kubectl_ok(&[
        "patch",
        "quota",
        "be",
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"pods":"5"}}}"#,
    ]);
    wait_for(
        "the controller's count: one best-effort pod of 5",
        WITHIN,
        || {
            let d = s.kubectl_ok(&["describe", "quota", "be"]);
            d.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "1", "5"])
                .then_some(())
        },
    );
    // Only pods can be counted in a best-effort scope.
    let out = s.kubectl(&[
        "create",
        "quota",
        "bad",
        "--hard=requests.cpu=1",
        "--scopes=BestEffort",
    ]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort"}: unsupported scope applied to resource"#),
        "{err}"
    );
    // A PriorityClass scope selector.
    s.kubectl_ok(&["create", "priorityclass", "high", "--value=1000"]);
    apply(
        &s,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: high}\nspec:\n  hard: {pods: \"1\", requests.cpu: \"1\"}\n  scopeSelector:\n    matchExpressions: [{scopeName: PriorityClass, operator: In, values: [high]}]\n",
    );
    wait_for("the high quota's status", WITHIN, || {
        let q = get_json(&s, &["quota", "high"])?;
        (q["status"]["used"]["pods"] == "0" && q["status"]["used"]["requests.cpu"] == "0")
            .then_some(())
    });
    let out = run(&sized("vip1", "high"));
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let out = run(&sized("vip2", "high"));
    let (_, err) = capstan_e2e::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("exceeded quota: high, requested: pods=1, used: pods=1, limited: pods=1"),
        "{err}"
    );
    run(&sized("plain", ""));
    wait_for("high counts vip1 alone", WITHIN, || {
        let q = get_json(&s, &["quota", "high"])?;
        (q["status"]["used"]["pods"] == "1" && q["status"]["used"]["requests.cpu"] == "100m")
            .then_some(())
    });
    // Claims' storage, kept by the controller's count (not only admission's charge).
    s.kubectl_ok(&[
        "create",
        "quota",
        "st",
        "--hard=requests.storage=2Gi,persistentvolumeclaims=2",
    ]);
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    s.kubectl_ok(&[
        "patch",
        "quota",
        "st",
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"requests.storage":"3Gi"}}}"#,
    ]);
    wait_for("the controller's count of claims", WITHIN, || {
        let q = get_json(&s, &["quota", "st"])?;
        (q["status"]["hard"]["requests.storage"] == "3Gi"
            && q["status"]["used"]["requests.storage"] == "1Gi"
            && q["status"]["used"]["persistentvolumeclaims"] == "1")
            .then_some(())
    });
}

/// Quota holds updates too: one that grows what an object uses (a Service turned into a
/// NodePort claims its ports) is charged, and refused past `hard` in upstream's words.
#[test]
fn quota_holds_an_update_that_grows_usage() {
    let s = Server::start();
    s.kubectl_ok(&["create", "quota", "np", "--hard=services.nodeports=1"]);
    wait_for("the np quota's status", WITHIN, || {
        let q = get_json(&s, &["quota", "np"])?;
        q["status"]["used"]["services.nodeports"]
            .as_str()
            .map(|_| ())
    });
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "two",
        "--tcp=80:8080,443:8443",
    ]);
    s.kubectl_ok(&["create", "service", "clusterip", "one", "--tcp=80:8080"]);
    let out = s.kubectl(&[
        "patch",
        "service",
        "two",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains("services \"two\" is forbidden: exceeded quota: np, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"),
        "{err}"
    );
    s.kubectl_ok(&[
        "patch",
        "service",
        "one",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let q = get_json(&s, &["quota", "np"]).expect("quota");
    assert_eq!(q["status"]["used"]["services.nodeports"], "1", "{q}");
    // A change that adds nothing (a label) needs no room.
    s.kubectl_ok(&["label", "service", "one", "tier=web"]);
}

#[test]
fn limit_range_defaults_and_bounds_apply_to_new_pods() {
    let s = Server::start();
    apply(
        &s,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: lr}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m, memory: 128Mi}\n    max: {cpu: '1'}\n",
    );
    s.kubectl_ok(&["run", "p", "--image=nginx"]);
    let p = get_json(&s, &["pod", "p"]).expect("pod");
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["cpu"], "500m", "{p}");
    assert_eq!(r["requests"]["cpu"], "100m");
    assert_eq!(r["limits"]["memory"], "256Mi");
    assert_eq!(r["requests"]["memory"], "128Mi");
    assert!(p["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
        .as_str()
        .unwrap_or_default()
        .starts_with("LimitRanger plugin set: "));
    let out = s.kubectl(&["run", "big", "--image=nginx", "--overrides={\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"nginx\",\"resources\":{\"limits\":{\"cpu\":\"2\"}}}]}}"]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains(
            r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{err}"
    );

    // A claim's storage request is held to PersistentVolumeClaim min and max (resizes too,
    // but only a bound claim may be resized, which needs a volume).
    apply(
        &s,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: storage}\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    min: {storage: 1Gi}\n    max: {storage: 2Gi}\n",
    );
    let claim = |name: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n")
    };
    for (name, size, why) in [
        (
            "small",
            "500Mi",
            "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi",
        ),
        (
            "large",
            "5Gi",
            "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi",
        ),
    ] {
        let out = s.kubectl_stdin(&["create", "-f", "-"], &claim(name, size));
        let (_, err) = capstan_e2e::text(&out);
        assert!(
            err.contains(&format!(
                "persistentvolumeclaims \"{name}\" is forbidden: {why}"
            )),
            "{err}"
        );
    }
    let out = s.kubectl_stdin(&["create", "-f", "-"], &claim("fits", "1Gi"));
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
}

fn ready_endpoints(slice: &EndpointSlice) -> usize {
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_watcher_sees_the_endpoint_slice_reach_three_ready_endpoints() {
    let s = Server::start_args(&["--simulated-nodes", "3"]);
    let c = client(&s).await;
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    let svc = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..3 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
            "spec": {"nodeName": format!("sim-node-{i}"),
                     "containers": [{"name": "a", "image": "nginx"}]}
        }))
        .expect("pod");
        // The nodes register moments after the server starts: retry a refused bind.
        let deadline = Instant::now() + WITHIN;
        while let Err(e) = pods.create(&PostParams::default(), &pod).await {
            assert!(Instant::now() < deadline, "create pod: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(c, "default");
    let mut events = watcher(
        slices,
        watcher::Config::default().labels("kubernetes.io/service-name=web"),
    )
    .boxed();
    let mut seen = Vec::new();
    tokio::time::timeout(WITHIN, async {
        while let Some(ev) = events.next().await {
            let slice = match ev.expect("watch event") {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                _ => continue,
            };
            let n = ready_endpoints(&slice);
            if seen.last() != Some(&n) {
                seen.push(n);
            }
            if n == 3 {
                assert_eq!(slice.ports.as_ref().and_then(|p| p[0].port), Some(8080));
                return;
            }
        }
        panic!("the watch ended");
    })
    .await
    .unwrap_or_else(|_| panic!("never 3 ready endpoints; saw {seen:?}"));
}
