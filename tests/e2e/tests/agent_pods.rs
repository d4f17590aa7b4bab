//! The node agent runs pods as real containers: kubectl against `capstan server` with its
//! agent on, the busybox test image imported from the images folder at start.

use std::time::{Duration, Instant};

use capstan_e2e::{apply, get_json, node_ready, wait_for, Server};
use serde_json::Value;

fn pod(s: &Server, name: &str) -> Option<Value> {
    get_json(s, &["pod", name])
}

/// What `kubectl logs ARGS…` printed (empty while the pod has none).
fn logs(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&s.kubectl(&all).stdout).into_owned()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn container_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

#[test]
fn kubectl_run_echo_hi_completes_and_logs_print_hi() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&[
        "run",
        "one",
        "--image=busybox",
        "--restart=Never",
        "--",
        "echo",
        "hi",
    ]);
    let p = wait_for("pod one to succeed", Duration::from_secs(60), || {
        let p = pod(&s, "one")?;
        (phase(&p) == "Succeeded").then_some(p)
    });
    let c = container_status(&p, "one").expect("container status");
    assert_eq!(c["state"]["terminated"]["exitCode"], 0, "{c}");
    assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{c}");
    assert!(
        c["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("capstan://")),
        "{c}"
    );
    assert!(
        c["imageID"].as_str().is_some_and(|id| !id.is_empty()),
        "{c}"
    );
    assert_eq!(s.kubectl_ok(&["logs", "one"]), "hi\n");
    let table = s.kubectl_ok(&["get", "pod", "one"]);
    assert!(table.contains("Completed"), "{table}");
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=one",
    ]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }
}

#[test]
fn a_crashing_container_backs_off_with_growing_delays() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&[
        "run",
        "crash",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo boom; exit 3",
    ]);
    let mut messages: Vec<String> = Vec::new();
    let p = wait_for(
        "CrashLoopBackOff with a 20s back-off",
        Duration::from_secs(90),
        || {
            let p = pod(&s, "crash")?;
            let c = container_status(&p, "crash")?.clone();
            if let Some(m) = c["state"]["waiting"]["message"].as_str() {
                if !messages.iter().any(|x| x == m) {
                    messages.push(m.to_string());
                }
            }
            let waiting = c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
            (waiting
                && c["state"]["waiting"]["message"]
                    .as_str()?
                    .contains("back-off 20s"))
            .then_some(p)
        },
    );
    assert!(
        messages.iter().any(|m| m.contains("back-off 10s")),
        "the delay grows from 10s: {messages:?}"
    );
    let c = container_status(&p, "crash").expect("status");
    assert!(c["restartCount"].as_i64().unwrap_or(0) >= 2, "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error", "{c}");
    let table = s.kubectl_ok(&["get", "pod", "crash", "--no-headers"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    // RESTARTS says when the last one was, as upstream's printer: `2 (8s ago)`.
    let restarts = table
        .split_whitespace()
        .skip(3)
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        restarts.starts_with(&format!("{} (", c["restartCount"])) && restarts.ends_with("ago)"),
        "{table}"
    );
    assert_eq!(s.kubectl_ok(&["logs", "crash", "--previous"]), "boom\n");
}

#[test]
fn a_memory_limit_breach_is_oom_killed() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    resources: {limits: {memory: 20Mi}}
"#,
    );
    let p = wait_for("pod hog to fail", Duration::from_secs(60), || {
        let p = pod(&s, "hog")?;
        (phase(&p) == "Failed").then_some(p)
    });
    let c = container_status(&p, "hog").expect("status");
    assert_eq!(c["state"]["terminated"]["reason"], "OOMKilled", "{c}");
    assert_eq!(p["status"]["qosClass"], "Burstable");
}

#[test]
fn config_map_and_secret_reach_env_and_files_and_updates_reach_the_file() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cret",
    ]);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {app: reader}}
spec:
  containers:
  - name: reader
    image: busybox
    command: ["sh", "-c", "echo env=$COLOR/$PASSWORD/$POD_NAME; while true; do echo file=$(cat /cfg/color)/$(cat /sec/password); sleep 0.5; done"]
    env:
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: cfg, key: color}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec}}
"#,
    );
    wait_for(
        "the env and the files in the logs",
        Duration::from_secs(60),
        || {
            let out = logs(&s, &["reader"]);
            (out.contains("env=blue/s3cret/reader") && out.contains("file=blue/s3cret"))
                .then_some(())
        },
    );
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "secret",
        "sec",
        "-p",
        r#"{"stringData":{"password":"n3w"}}"#,
    ]);
    let t = Instant::now();
    // The agent re-reads projected volumes only every 60 s on its own: a change that arrives
    // well before that came by the watch of the objects.
    wait_for(
        "the ConfigMap and Secret changes to reach the mounted files",
        Duration::from_secs(15),
        || {
            let out = logs(&s, &["reader", "--tail=1"]);
            out.contains("file=green/n3w").then_some(())
        },
    );
    eprintln!("configmap update reached the file in {:?}", t.elapsed());
}

#[test]
fn a_missing_key_is_create_container_config_error_until_it_exists() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&["create", "configmap", "partial", "--from-literal=a=1"]);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: needs-key}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo b=$B"]
    env:
    - {name: B, valueFrom: {configMapKeyRef: {name: partial, key: b}}}
"#,
    );
    let p = wait_for(
        "CreateContainerConfigError",
        Duration::from_secs(30),
        || {
            let p = pod(&s, "needs-key")?;
            let c = container_status(&p, "c")?;
            (c["state"]["waiting"]["reason"] == "CreateContainerConfigError").then(|| c.clone())
        },
    );
    assert_eq!(
        p["state"]["waiting"]["message"],
        "couldn't find key b in ConfigMap default/partial"
    );
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "partial",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    wait_for(
        "the pod to run once the key exists",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "needs-key")?;
            (phase(&p) == "Succeeded").then_some(())
        },
    );
    assert_eq!(s.kubectl_ok(&["logs", "needs-key"]), "b=2\n");
}

#[test]
fn delete_honours_the_grace_period_and_the_container_is_gone() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    // PID 1 with no handler ignores SIGTERM: only the SIGKILL after the grace period ends it.
    s.kubectl_ok(&[
        "run",
        "stubborn",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "1000",
    ]);
    wait_for("stubborn to run", Duration::from_secs(60), || {
        (phase(&pod(&s, "stubborn")?) == "Running").then_some(())
    });
    let t = Instant::now();
    s.kubectl_ok(&[
        "delete",
        "pod",
        "stubborn",
        "--grace-period=3",
        "--timeout=60s",
    ]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "deleted after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(20), "deletion took {took:?}");
    assert!(pod(&s, "stubborn").is_none());
}

#[test]
fn a_missing_image_ends_in_image_pull_back_off() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    // Port 1 on loopback: nothing listens, the pull fails at once (no traffic leaves).
    s.kubectl_ok(&[
        "run",
        "ghost",
        "--image=127.0.0.1:1/ghost:1",
        "--restart=Never",
    ]);
    let mut reasons = Vec::new();
    let c = wait_for("ImagePullBackOff", Duration::from_secs(60), || {
        let p = pod(&s, "ghost")?;
        let c = container_status(&p, "ghost")?.clone();
        let r = c["state"]["waiting"]["reason"].as_str()?.to_string();
        if !reasons.contains(&r) {
            reasons.push(r.clone());
        }
        (r == "ImagePullBackOff").then_some(c)
    });
    let msg = c["state"]["waiting"]["message"].as_str().unwrap_or("");
    assert_eq!(msg, "Back-off pulling image \"127.0.0.1:1/ghost:1\"");
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ghost",
    ]);
    assert!(
        events.contains("Failed to pull image \"127.0.0.1:1/ghost:1\""),
        "{events}"
    );
    assert!(events.contains("Error: ErrImagePull"), "{events}");
    assert!(events.contains("Back-off pulling image"), "{events}");
    // The pull is retried after its back-off (10 s): a second failure is counted.
    wait_for("a second pull attempt", Duration::from_secs(40), || {
        let ev = get_json(
            &s,
            &[
                "events",
                "--field-selector",
                "involvedObject.name=ghost,reason=Pulling",
            ],
        )?;
        (ev["items"][0]["count"].as_i64()? >= 2).then_some(())
    });
    eprintln!("reasons seen: {reasons:?}");
}

#[test]
fn a_deployments_pods_run_for_real() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    wait_for("2 ready replicas", Duration::from_secs(90), || {
        let d = get_json(&s, &["deployment", "web"])?;
        (d["status"]["readyReplicas"] == 2).then_some(())
    });
    let pods = get_json(&s, &["pods", "-l", "app=web"]).expect("pods");
    for p in pods["items"].as_array().expect("items") {
        assert_eq!(phase(p), "Running");
        assert_eq!(
            p["status"]["conditions"].as_array().map(|c| c
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")),
            Some(true)
        );
    }
}

/// Processes whose command line is exactly `argv` (joined by NULs in /proc).
fn processes(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn containers_survive_a_server_kill_and_are_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("agent").join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    std::fs::copy(
        capstan_e2e::test_images_dir().join("busybox.tar"),
        images.join("busybox.tar"),
    )
    .expect("copy image");
    let mut s = Server::start_with_args(dir.path(), &["--with-agent"]);
    node_ready(&s);
    // A command line no other test runs, to count this container's process.
    let argv = ["sleep", "3599"];
    s.kubectl_ok(&["run", "steady", "--image=busybox", "--", argv[0], argv[1]]);
    let before = wait_for("steady to run", Duration::from_secs(60), || {
        let p = pod(&s, "steady")?;
        (phase(&p) == "Running").then(|| container_status(&p, "steady").cloned())?
    });
    assert_eq!(processes(&argv), 1);
    s.kill();
    assert_eq!(processes(&argv), 1, "the container outlives the server");
    let s = Server::start_with_args(dir.path(), &["--with-agent"]);
    let p = wait_for("steady to be reported", Duration::from_secs(60), || {
        pod(&s, "steady")
    });
    let after = container_status(&p, "steady").expect("status").clone();
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], 0);
    assert_eq!(
        after["state"]["running"]["startedAt"],
        before["state"]["running"]["startedAt"]
    );
    assert_eq!(processes(&argv), 1, "adopted, not started again");
    // Only an agent that adopted the container can stop it and let the pod go.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "steady",
        "--grace-period=1",
        "--timeout=60s",
    ]);
    wait_for("the process to be gone", Duration::from_secs(30), || {
        (processes(&argv) == 0).then_some(())
    });
    drop(s);
}

#[test]
fn a_failing_liveness_probe_restarts_and_readiness_follows_http() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  containers:
  - name: probed
    image: busybox
    command: ["sh", "-c", "touch /tmp/healthy; mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; sleep 4; rm /tmp/healthy; sleep 3600"]
    ports: [{name: web, containerPort: 8080}]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      httpGet: {path: /index.html, port: web}
      periodSeconds: 1
"#,
    );
    wait_for(
        "the pod to be Ready through its HTTP readiness probe",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "probed")?;
            let c = container_status(&p, "probed")?;
            (c["ready"] == true).then_some(())
        },
    );
    wait_for(
        "a restart after the liveness probe fails",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "probed")?;
            let c = container_status(&p, "probed")?;
            (c["restartCount"].as_i64()? >= 1).then_some(())
        },
    );
    let table = s.kubectl_ok(&["get", "pod", "probed"]);
    let restarts = table
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("");
    assert!(
        restarts.starts_with('1') || restarts.starts_with('2'),
        "{table}"
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
}

#[test]
fn delete_runs_pre_stop_before_the_container_is_stopped() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let host = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: hooked
    image: busybox
    command: ["sh", "-c", "trap 'echo term >> /host/log; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo started >> /host/log"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo prestop >> /host/log"]}}}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - {{name: host, hostPath: {{path: {}, type: Directory}}}}
"#,
        host.path().display()
    );
    apply(&s, &yaml);
    wait_for("hooked to run", Duration::from_secs(60), || {
        (phase(&pod(&s, "hooked")?) == "Running").then_some(())
    });
    s.kubectl_ok(&["delete", "pod", "hooked", "--timeout=60s"]);
    let log = std::fs::read_to_string(host.path().join("log")).expect("the hooks wrote");
    assert_eq!(log, "started\nprestop\nterm\n");
}

#[test]
fn pods_get_addresses_and_reach_each_other_and_the_node() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    let node = get_json(&s, &["nodes"]).expect("nodes");
    let cidr = node["items"][0]["spec"]["podCIDR"]
        .as_str()
        .expect("the node has a podCIDR")
        .to_string();
    let prefix = cidr
        .rsplit_once('.')
        .map(|(p, _)| format!("{p}."))
        .expect("a /24");
    s.kubectl_ok(&[
        "run",
        "server",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "mkdir /www; echo hello-from-server > /www/index.html; httpd -f -p 8080 -h /www",
    ]);
    let server_ip = wait_for("the server pod's IP", Duration::from_secs(60), || {
        let p = pod(&s, "server")?;
        (phase(&p) == "Running").then(|| p["status"]["podIP"].as_str().map(str::to_string))?
    });
    assert!(server_ip.starts_with(&prefix), "{server_ip} not in {cidr}");
    let gateway = format!("{prefix}1");
    let script = format!("wget -qO- http://{server_ip}:8080/; ping -c1 -W2 {gateway} >/dev/null && echo node-reachable");
    s.kubectl_ok(&[
        "run",
        "client",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_for("the client to finish", Duration::from_secs(60), || {
        let p = pod(&s, "client")?;
        matches!(phase(&p), "Succeeded" | "Failed").then_some(())
    });
    assert_eq!(
        s.kubectl_ok(&["logs", "client"]),
        "hello-from-server\nnode-reachable\n"
    );
    let wide = s.kubectl_ok(&["get", "pod", "server", "-o", "wide"]);
    assert!(wide.contains(&server_ip), "{wide}");
}

#[test]
fn init_containers_run_in_order_and_the_termination_message_is_reported() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  restartPolicy: Never
  initContainers:
  - {name: first, image: busybox, command: ["sh", "-c", "echo one >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: second, image: busybox, command: ["sh", "-c", "echo two >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /work/order; echo all-done > /dev/termination-log"]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes:
  - {name: work, emptyDir: {}}
"#,
    );
    // What `kubectl get pods` prints for pods part-way (upstream's printPod): an init
    // container still running, and one app container done beside a running one.
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stuck-in-init}
spec:
  terminationGracePeriodSeconds: 0
  initContainers:
  - {name: wait, image: busybox, command: ["sleep", "3600"]}
  containers:
  - {name: app, image: busybox, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: half-done}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - {name: quick, image: busybox, command: ["true"]}
  - {name: slow, image: busybox, command: ["sleep", "3600"]}
"#,
    );
    // NAME READY STATUS RESTARTS AGE
    let row = |name: &str| -> Option<Vec<String>> {
        let out = s.kubectl(&["get", "pod", name, "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Some(text.split_whitespace().map(str::to_string).collect())
    };
    wait_for(
        "stuck-in-init to print Init:0/1",
        Duration::from_secs(60),
        || {
            let r = row("stuck-in-init")?;
            (r.get(1..3)? == ["0/1", "Init:0/1"]).then_some(())
        },
    );
    wait_for(
        "half-done to print NotReady 1/2",
        Duration::from_secs(60),
        || {
            let r = row("half-done")?;
            (r.get(1..3)? == ["1/2", "NotReady"]).then_some(())
        },
    );
    s.kubectl_ok(&[
        "delete",
        "pod",
        "stuck-in-init",
        "half-done",
        "--wait=false",
    ]);
    let p = wait_for("ordered to succeed", Duration::from_secs(60), || {
        let p = pod(&s, "ordered")?;
        (phase(&p) == "Succeeded").then_some(p)
    });
    let done = s.kubectl_ok(&["get", "pod", "ordered", "--no-headers"]);
    let done: Vec<&str> = done.split_whitespace().collect();
    assert_eq!(done[1..4], ["0/1", "Completed", "0"], "{done:?}");
    assert_eq!(
        s.kubectl_ok(&["logs", "ordered", "-c", "app"]),
        "one\ntwo\n"
    );
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .expect("init statuses");
    assert_eq!(inits.len(), 2);
    for c in inits {
        assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{c}");
    }
    let app = container_status(&p, "app").expect("app status");
    assert_eq!(app["state"]["terminated"]["message"], "all-done\n");
    let init_cond = p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Initialized").cloned())
        .expect("Initialized condition");
    assert_eq!(init_cond["status"], "True");
}

#[test]
fn active_deadline_seconds_fails_the_pod() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: bounded}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: ["sleep", "3600"]}
"#,
    );
    let p = wait_for(
        "the deadline to fail the pod",
        Duration::from_secs(60),
        || {
            let p = pod(&s, "bounded")?;
            (phase(&p) == "Failed").then_some(p)
        },
    );
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
    let c = container_status(&p, "c").expect("status");
    assert!(c["state"]["terminated"].is_object(), "{c}");
}

#[test]
fn fallback_to_logs_on_error_reports_the_last_lines() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: fails}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; echo last words; exit 2"]
"#,
    );
    let p = wait_for("fails to fail", Duration::from_secs(60), || {
        let p = pod(&s, "fails")?;
        (phase(&p) == "Failed").then_some(p)
    });
    let c = container_status(&p, "c").expect("status");
    assert_eq!(c["state"]["terminated"]["exitCode"], 2, "{c}");
    assert_eq!(
        c["state"]["terminated"]["message"], "first\nlast words\n",
        "{c}"
    );
}

/// Every network link on the host: (name, `ip -o link` line).
fn ip_links() -> Vec<(String, String)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            Some((name, l.to_string()))
        })
        .collect()
}

/// Mount points whose path contains `part`.
fn mounts_containing(part: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.contains(part))
        .map(str::to_string)
        .collect()
}

#[test]
fn cleanup_stops_the_containers_and_leaves_nothing_on_the_host() {
    let mut s = Server::start_node(&[]);
    node_ready(&s);
    let argv = ["sleep", "3598"];
    s.kubectl_ok(&["run", "left", "--image=busybox", "--", argv[0], argv[1]]);
    wait_for("left to run", Duration::from_secs(60), || {
        let p = pod(&s, "left")?;
        (phase(&p) == "Running").then_some(())
    });
    assert_eq!(processes(&argv), 1);
    let links_before = ip_links();
    s.kill();
    assert_eq!(processes(&argv), 1, "the container outlives the server");

    let printed = s.cleanup().expect("capstan cleanup");
    let removed: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("removed "))
        .collect();
    assert!(
        removed.iter().any(|r| r.starts_with("container ")),
        "{printed}"
    );
    assert!(
        removed.iter().any(|r| r.starts_with("sandbox ")),
        "{printed}"
    );
    let bridge = removed
        .iter()
        .find_map(|r| r.strip_prefix("link cap"))
        .unwrap_or_else(|| panic!("no bridge removed: {printed}"));
    let cgroup = removed
        .iter()
        .find_map(|r| r.strip_prefix("cgroup "))
        .unwrap_or_else(|| panic!("no cgroup removed: {printed}"));
    let state_dir = removed
        .iter()
        .find_map(|r| r.strip_prefix("dir "))
        .unwrap_or_else(|| panic!("no state dir removed: {printed}"));

    assert_eq!(processes(&argv), 0, "the container is stopped");
    // The bridge and the pod's veth (a port of the bridge before the cleanup) are gone.
    let ports: Vec<&String> = links_before
        .iter()
        .filter(|(_, line)| line.contains(&format!(" master cap{bridge} ")))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(ports.len(), 1, "one pod veth: {links_before:?}");
    let links_after = ip_links();
    for gone in ports.into_iter().chain([&format!("cap{bridge}")]) {
        assert!(
            !links_after.iter().any(|(name, _)| name == gone),
            "{gone} is left: {links_after:?}"
        );
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroupfs")
        .flatten()
    {
        let dir = hierarchy.path().join(cgroup);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert!(
        !std::path::Path::new(state_dir).exists(),
        "{state_dir} is left"
    );
    let table = removed
        .iter()
        .find_map(|r| r.strip_prefix("nftables table "))
        .unwrap_or_else(|| panic!("no nftables table removed: {printed}"));
    let listed = std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    assert!(!listed.status.success(), "table {table} is left");
    let data_dir = s.data_dir.to_string_lossy().into_owned();
    for part in [state_dir, data_dir.as_str()] {
        assert_eq!(
            mounts_containing(part),
            Vec::<String>::new(),
            "mounts below {part}"
        );
    }
    // Once more: nothing is left to remove.
    assert_eq!(s.cleanup().expect("second cleanup").trim(), "");
}

#[test]
fn runtime_default_seccomp_refuses_what_an_unconfined_container_may_do() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    // Creating a user namespace needs no capability (this kernel allows it), so only the
    // filter stands between the container and `unshare`; fork/exec and threads still work.
    let script = "grep Seccomp: /proc/self/status; unshare -U true && echo unshared || echo refused; (echo child) & wait";
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: filtered}}
spec:
  restartPolicy: Never
  containers:
  - name: confined
    image: busybox
    command: ["sh", "-c", "{script}"]
    securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}
  - name: unconfined
    image: busybox
    command: ["sh", "-c", "{script}"]
    securityContext: {{seccompProfile: {{type: Unconfined}}}}
"#
        ),
    );
    wait_for("the pod to finish", Duration::from_secs(60), || {
        let p = pod(&s, "filtered")?;
        (phase(&p) == "Succeeded").then_some(())
    });
    let confined = s.kubectl_ok(&["logs", "filtered", "-c", "confined"]);
    let unconfined = s.kubectl_ok(&["logs", "filtered", "-c", "unconfined"]);
    let seccomp_mode = |log: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(seccomp_mode(&confined).as_deref(), Some("2"), "{confined}");
    assert_eq!(
        seccomp_mode(&unconfined).as_deref(),
        Some("0"),
        "{unconfined}"
    );
    assert!(
        confined.contains("refused") && confined.contains("child"),
        "{confined}"
    );
    assert!(
        unconfined.contains("unshared") && unconfined.contains("child"),
        "{unconfined}"
    );
}

#[test]
fn downward_api_files_show_the_pod_and_follow_its_labels() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: downward, labels: {tier: one}, annotations: {note: hello}}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "while true; do echo \"name=$(cat /info/name) mem=$(cat /info/mem) $(tr '\\n' ' ' < /info/labels)\"; sleep 0.5; done"]
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: info, mountPath: /info}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
"#,
    );
    wait_for(
        "the downwardAPI files in the logs",
        Duration::from_secs(60),
        || {
            let out = logs(&s, &["downward", "--tail=1"]);
            (out.contains("name=downward mem=64 ") && out.contains("tier=\"one\"")).then_some(())
        },
    );
    s.kubectl_ok(&["label", "pod", "downward", "tier=two", "--overwrite"]);
    // The new labels arrive with the pod's own watch event, long before the 60 s resync.
    wait_for(
        "the label change to reach the downwardAPI file",
        Duration::from_secs(15),
        || {
            let out = logs(&s, &["downward", "--tail=1"]);
            out.contains("tier=\"two\"").then_some(())
        },
    );
}
