//! A stand-alone agent with no kubelet serving certificate (`capstan agent --kubeconfig` as
//! `system:node:N`) reached through the tunnel it opened: kubectl logs (-f), exec and port-forward
//! reach its pod; only the node itself may open its tunnel; the tunnel comes back after a
//! server restart; a killed agent's pods fail fast.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use capstan_e2e::{get_json, text, user_kubeconfig, wait_for, Agent, Server};

/// GET `path` from `127.0.0.1:port` (HTTP/1.0: the server closes when done); the body.
fn http_get(port: u16, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("response");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(answer)
}

#[test]
fn a_tunnelled_agent_serves_logs_exec_and_port_forward() {
    let s = Server::start();
    let node = format!("tunnel-{}", std::process::id());
    let kubeconfig = user_kubeconfig(&s, &format!("system:node:{node}"), &["system:nodes"]);
    // The node identity needs nothing more: `system:nodes` holds the node roles, and the
    // Node authorizer gives it what its pods use.
    let mut agent = Agent::start(&kubeconfig, &node);
    let registered = wait_for(
        "the node to register Ready",
        Duration::from_secs(30),
        || {
            let n = get_json(&s, &["node", &node])?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(n)
        },
    );
    assert_eq!(
        registered["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 0,
        "a tunnelled node serves no endpoint of its own"
    );

    s.kubectl_ok(&[
        "run",
        "tun",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hello-through-the-tunnel; mkdir -p /www; echo served-by-httpd > /www/index.html; httpd -f -p 8080 -h /www",
    ]);
    wait_for("pod tun to run", Duration::from_secs(60), || {
        let p = get_json(&s, &["pod", "tun"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        get_json(&s, &["pod", "tun"]).expect("pod")["spec"]["nodeName"],
        node.as_str()
    );

    // Logs: the first line may take a moment to reach the log file.
    wait_for(
        "the pod's log through the tunnel",
        Duration::from_secs(20),
        || {
            let out = s.kubectl(&["logs", "tun"]);
            let (stdout, _) = text(&out);
            (out.status.success() && stdout.contains("hello-through-the-tunnel")).then_some(())
        },
    );
    // `logs -f` follows through the tunnel: lines written after it started arrive, and it
    // returns when the container ends.
    s.kubectl_ok(&[
        "run",
        "ticks",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick-$i; sleep 1; done",
    ]);
    wait_for("pod ticks to start", Duration::from_secs(60), || {
        let p = get_json(&s, &["pod", "ticks"])?;
        (p["status"]["phase"] != "Pending").then_some(())
    });
    assert_eq!(
        // Bounded: a follow that never ends fails here instead of hanging the suite.
        s.kubectl_ok(&["logs", "-f", "ticks", "--request-timeout=60s"]),
        "tick-1\ntick-2\ntick-3\n"
    );
    assert_eq!(s.kubectl_ok(&["exec", "tun", "--", "echo", "hi"]), "hi\n");
    let out = s.kubectl(&["exec", "tun", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));

    // Port-forward: the first line names the local port.
    let mut forward =
        s.kubectl_spawn(&["port-forward", "pod/tun", ":8080", "--address", "127.0.0.1"]);
    let stdout = forward.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port: u16 = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    std::thread::spawn(move || for _ in lines {});
    // httpd may still be starting: retry until it answers.
    wait_for(
        "httpd through port-forward",
        Duration::from_secs(20),
        || (http_get(port, "/index.html") == "served-by-httpd\n").then_some(()),
    );
    let _ = forward.kill();
    let _ = forward.wait();

    // Only the node itself may open its tunnel: not the admin, not another node.
    let tunnel = format!("/capstan.io/v1/nodes/{node}/tunnel");
    let out = s.kubectl(&["get", "--raw", &tunnel]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "forbidden: User \"system:admin\" cannot get path \"{tunnel}\""
        )),
        "{stderr}"
    );
    let other = user_kubeconfig(&s, "system:node:other", &["system:nodes"]);
    // `--kubeconfig`: the file name has colons, which KUBECONFIG would split on.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&other)
        .args(["get", "--raw", &tunnel])
        .output()
        .expect("kubectl");
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("Error from server (Forbidden)")
            && stderr.contains("User \"system:node:other\" cannot get path"),
        "{stderr}"
    );
    // The node itself gets past identity; a plain GET is no upgrade.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", &tunnel])
        .output()
        .expect("kubectl");
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("BadRequest") || stderr.contains("HTTP/1.1 upgrade"),
        "{stderr}"
    );

    // The server restarts on its port: the agent reconnects by itself, and the first request
    // waits for it (the Node reports no port of its own).
    let mut s = s;
    s.kill();
    let s = Server::start_in(&s.data_dir.clone(), s.port);
    let started = Instant::now();
    let logs = s.kubectl_ok(&["logs", "tun"]);
    assert!(logs.contains("hello-through-the-tunnel"), "{logs}");
    eprintln!(
        "logs right after a server restart took {:?}",
        started.elapsed()
    );

    // A killed agent: its connections close, and the next request fails within seconds.
    agent.kill();
    let started = Instant::now();
    let out = s.kubectl(&["logs", "tun"]);
    let elapsed = started.elapsed();
    eprintln!("logs of a killed agent's pod failed after {elapsed:?}");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "the agent of node \"{node}\" has no tunnel connection to this server"
        )),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    drop(agent);
}
