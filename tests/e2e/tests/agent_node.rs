//! The node agent's Node, Lease and kubelet endpoint through kubectl against
//! `capstan server` with its agent: registration with this host's facts, Ready within
//! seconds, Lease renewals, re-use of the Node after a restart, and `kubectl logs` both
//! refused as upstream refuses and streamed from the kubelet endpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capstan_e2e::{apply, get_json, text, wait_for, Server};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(20);

/// The server's own Node once it is Ready, and how long that took from the server's start.
fn ready_node(s: &Server) -> (Value, Duration) {
    let started = Instant::now();
    let node = wait_for("the agent's node to be Ready", WITHIN, || {
        let list = get_json(s, &["nodes"])?;
        list["items"]
            .as_array()?
            .iter()
            .find(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .cloned()
    });
    (node, s.startup + started.elapsed())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn condition<'a>(node: &'a Value, ty: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

#[test]
fn the_node_registers_ready_with_this_hosts_facts() {
    let s = Server::start_args(&["--with-agent"]);
    let (node, took) = ready_node(&s);
    eprintln!(
        "node Ready {} ms after the server was started",
        took.as_millis()
    );
    let name = node["metadata"]["name"].as_str().expect("name");
    let out = s.kubectl_ok(&["get", "nodes"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(name) && l.contains(" Ready ")),
        "{out}"
    );

    let status = &node["status"];
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(status["capacity"]["cpu"], cpus.to_string());
    let mem_total_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    let capacity_kib: f64 = status["capacity"]["memory"]
        .as_str()
        .and_then(|m| m.strip_suffix("Ki")?.parse().ok())
        .expect("memory in Ki");
    assert!((capacity_kib - mem_total_kib).abs() / mem_total_kib < 0.01);
    let allocatable_kib: f64 = status["allocatable"]["memory"]
        .as_str()
        .and_then(|m| m.strip_suffix("Ki")?.parse().ok())
        .expect("allocatable memory in Ki");
    assert_eq!(capacity_kib - allocatable_kib, 100.0 * 1024.0);
    assert_eq!(status["capacity"]["pods"], "110");
    assert_eq!(status["capacity"]["hugepages-2Mi"], "0");
    assert!(status["capacity"]["ephemeral-storage"]
        .as_str()
        .and_then(|b| b.parse::<u64>().ok())
        .is_some_and(|b| b > 0));

    let info = &status["nodeInfo"];
    assert_eq!(info["kernelVersion"], read("/proc/sys/kernel/osrelease"));
    assert_eq!(info["bootID"], read("/proc/sys/kernel/random/boot_id"));
    assert_eq!(info["machineID"], read("/etc/machine-id"));
    let pretty = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("PRETTY_NAME");
    assert_eq!(info["osImage"], pretty);
    assert_eq!(info["operatingSystem"], "linux");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(info["architecture"], arch);
    assert_eq!(info["kubeletVersion"], "v1.33.0");
    assert!(info["containerRuntimeVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("capstan://")));

    let addresses = status["addresses"].as_array().expect("addresses");
    let internal = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .expect("an InternalIP");
    assert!(internal.parse::<std::net::IpAddr>().is_ok(), "{internal}");
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "Hostname" && a["address"] == name));
    assert!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .is_some_and(|p| p > 0));

    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], arch);
    assert_eq!(labels["beta.kubernetes.io/arch"], arch);
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");

    let ready = condition(&node, "Ready");
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    assert_eq!(
        condition(&node, "MemoryPressure")["reason"],
        "KubeletHasSufficientMemory"
    );
    assert_eq!(
        condition(&node, "PIDPressure")["reason"],
        "KubeletHasSufficientPID"
    );
    // Whether this machine's disk is under pressure is its own business; the words follow.
    let disk = condition(&node, "DiskPressure");
    let want = if disk["status"] == "True" {
        "KubeletHasDiskPressure"
    } else {
        "KubeletHasNoDiskPressure"
    };
    assert_eq!(disk["reason"], want);
}

#[test]
fn the_lease_renews_and_belongs_to_the_node() {
    // A 4 s lease renews every second.
    let s = Server::start_args(&["--with-agent", "--node-lease-duration-seconds", "4"]);
    let (node, _) = ready_node(&s);
    let name = node["metadata"]["name"].as_str().expect("name");
    let lease_of = || get_json(&s, &["lease", "-n", "kube-node-lease", name]);
    let first = wait_for("the node's Lease", WITHIN, lease_of);
    assert_eq!(first["spec"]["holderIdentity"], name);
    assert_eq!(first["spec"]["leaseDurationSeconds"], 4);
    assert_eq!(
        first["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    let renewed = first["spec"]["renewTime"].clone();
    wait_for("the Lease to be renewed", WITHIN, || {
        let now = lease_of()?;
        (now["spec"]["renewTime"] != renewed).then_some(())
    });
}

#[test]
fn a_restarted_server_reuses_its_node_and_keeps_what_users_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_with_args(dir.path(), &["--with-agent"]);
    let (node, _) = ready_node(&s);
    let name = node["metadata"]["name"].as_str().expect("name").to_string();
    s.kubectl_ok(&["label", "node", &name, "team=blue"]);
    s.kubectl_ok(&["taint", "node", &name, "dedicated=ci:NoSchedule"]);
    s.kill();

    let s = Server::start_with_args(dir.path(), &["--with-agent"]);
    let (again, _) = ready_node(&s);
    assert_eq!(again["metadata"]["uid"], node["metadata"]["uid"]);
    assert_eq!(again["metadata"]["labels"]["team"], "blue");
    assert_eq!(
        again["metadata"]["labels"]["kubernetes.io/hostname"],
        name.as_str()
    );
    let taints = again["spec"]["taints"].as_array().expect("taints");
    assert!(taints
        .iter()
        .any(|t| t["key"] == "dedicated" && t["value"] == "ci"));
    // The new process's kubelet endpoint (a new port) is what the Node names.
    let port = wait_for("the Node to name the new kubelet port", WITHIN, || {
        let n = get_json(&s, &["node", &name])?;
        let p = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
        (p > 0).then_some(p)
    });
    assert!(port > 0);
}

#[test]
fn the_node_puts_its_status_right_and_comes_back_when_deleted() {
    let s = Server::start_args(&["--with-agent"]);
    let (node, _) = ready_node(&s);
    let name = node["metadata"]["name"].as_str().expect("name");
    let ready_status = || {
        let n = get_json(&s, &["node", name])?;
        Some((
            condition(&n, "Ready")["status"].as_str()?.to_string(),
            n["metadata"]["uid"].as_str()?.to_string(),
        ))
    };
    // As the node lifecycle controller marks a silent node: the agent's next status period
    // (10 s) says Ready again.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#;
    s.kubectl_ok(&["patch", "node", name, "--subresource=status", "-p", patch]);
    assert_eq!(ready_status().map(|r| r.0).as_deref(), Some("Unknown"));
    wait_for("Ready to be True again", Duration::from_secs(30), || {
        ready_status().filter(|r| r.0 == "True")
    });

    s.kubectl_ok(&["delete", "node", name]);
    let old_uid = node["metadata"]["uid"].as_str().expect("uid");
    wait_for(
        "the node to register again",
        Duration::from_secs(30),
        || ready_status().filter(|r| r.0 == "True" && r.1 != old_uid),
    );
}

/// A pod that never runs here (its image does not exist), bound to `node` or to none.
fn pod_yaml(name: &str, node: Option<&str>, containers: &[&str]) -> String {
    let mut y = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n");
    if let Some(n) = node {
        y.push_str(&format!("  nodeName: {n}\n"));
    }
    y.push_str("  containers:\n");
    for c in containers {
        y.push_str(&format!(
            "  - name: {c}\n    image: capstan-test.invalid/never:0\n"
        ));
    }
    y
}

#[test]
fn kubectl_logs_is_refused_as_upstream_refuses() {
    let s = Server::start_args(&["--with-agent", "--disable-scheduler"]);
    let (node, _) = ready_node(&s);
    let name = node["metadata"]["name"].as_str().expect("name");

    let out = s.kubectl(&["logs", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("pods \"nope\" not found"),
        "{:?}",
        text(&out)
    );

    apply(&s, &pod_yaml("unbound", None, &["c"]));
    let out = s.kubectl(&["logs", "unbound"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("pod unbound does not have a host assigned"),
        "{:?}",
        text(&out)
    );

    // kubectl picks the first container itself; the server's own answer is asked directly.
    apply(&s, &pod_yaml("two", Some(name), &["a", "b"]));
    let out = s.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/two/log"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{:?}",
        text(&out)
    );
    let out = s.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/two/log?container=zz",
    ]);
    assert!(
        text(&out)
            .1
            .contains("container zz is not valid for pod two"),
        "{:?}",
        text(&out)
    );
    let out = s.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/two/log?container=a&tailLines=-1",
    ]);
    assert!(
        text(&out)
            .1
            .contains("tailLines: Invalid value: -1: must be greater than or equal to 0"),
        "{:?}",
        text(&out)
    );
    // Bound, but nothing ran yet: the kubelet's own words come through.
    let out = s.kubectl(&["logs", "two", "-c", "a", "--previous"]);
    assert!(
        text(&out)
            .1
            .contains("previous terminated container \"a\" in pod \"two\" not found"),
        "{:?}",
        text(&out)
    );
}

/// A CRI log file for a run of `container` in `pod`, where the agent keeps it.
fn log_path(s: &Server, pod: &str, container: &str, attempt: u32) -> PathBuf {
    let pod = get_json(s, &["pod", pod]).expect("pod");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let dir = s
        .data_dir
        .join("agent/pods")
        .join(uid)
        .join("logs")
        .join(container);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir.join(format!("{attempt}.log"))
}

fn cri(lines: &[(u32, &str, &str)]) -> String {
    lines
        .iter()
        .map(|(sec, tag, text)| {
            format!("2026-01-01T00:00:{sec:02}.000000000Z stdout {tag} {text}\n")
        })
        .collect()
}

#[test]
fn kubectl_logs_streams_through_the_kubelet_endpoint() {
    let s = Server::start_args(&["--with-agent", "--disable-scheduler"]);
    let (node, _) = ready_node(&s);
    let name = node["metadata"]["name"].as_str().expect("name");
    apply(&s, &pod_yaml("talker", Some(name), &["c"]));
    std::fs::write(
        log_path(&s, "talker", "c", 0),
        cri(&[(1, "F", "first run")]),
    )
    .expect("write");
    let current = log_path(&s, "talker", "c", 1);
    std::fs::write(
        &current,
        cri(&[
            (1, "F", "one"),
            (2, "P", "tw"),
            (2, "F", "o"),
            (3, "F", "three"),
        ]),
    )
    .expect("write");

    assert_eq!(s.kubectl_ok(&["logs", "talker"]), "one\ntwo\nthree\n");
    assert_eq!(
        s.kubectl_ok(&["logs", "talker", "--tail", "2"]),
        "two\nthree\n"
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "talker", "--tail", "1", "--timestamps"]),
        "2026-01-01T00:00:03.000000000Z three\n"
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "talker", "--limit-bytes", "6"]),
        "one\ntw"
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "talker", "--previous"]),
        "first run\n"
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "talker", "--insecure-skip-tls-verify-backend"]),
        "one\ntwo\nthree\n"
    );

    let mut follow = s.kubectl_follow(&["logs", "-f", "talker"]);
    follow.wait_for_line("three", WITHIN, |l| l == "three");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&current)
            .expect("open the log");
        f.write_all(cri(&[(4, "F", "four")]).as_bytes())
            .expect("append");
    }
    follow.wait_for_line("four", WITHIN, |l| l == "four");
    assert!(
        follow.wait_exit(Duration::ZERO).is_none(),
        "still following"
    );
    std::fs::write(capstan_agent_exited_marker(&current), b"").expect("marker");
    let status = follow
        .wait_exit(WITHIN)
        .expect("kubectl logs -f ends once the container has exited");
    assert!(status.success());
    assert_eq!(follow.lines(), ["one", "two", "three", "four"]);
}

/// `logs::exited_marker_path`: `<n>.log.exited` beside the log.
fn capstan_agent_exited_marker(log: &std::path::Path) -> PathBuf {
    let mut name = log.file_name().expect("file name").to_os_string();
    name.push(".exited");
    log.with_file_name(name)
}
