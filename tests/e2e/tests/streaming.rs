//! Into the running pod with every kubectl from 1.27 to 1.33: exec (exit codes, piped stdin,
//! a pty, a client that leaves), attach (piped stdin, the container's own terminal), debug (an
//! ephemeral container targeting another), cp both ways and port-forward (HTTP, concurrent
//! connections, a 50 MiB transfer checked by hash), through the API server's proxy to the node
//! agent's kubelet endpoint; and kube-rs's `exec` (`AttachParams`) and `portforward` on the same pods.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_e2e::{get_json, kubectl_versions_dir, node_ready, text, wait_for, Server};
use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 1.27 and 1.29 speak SPDY; 1.30+ WebSocket for exec; 1.31+ WebSocket-tunnelled SPDY for
/// port-forward.
const VERSIONS: &[&str] = &["1.27", "1.29", "1.30", "1.31", "1.33"];

struct Kubectl<'a> {
    bin: PathBuf,
    server: &'a Server,
}

impl Kubectl<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", self.server.kubeconfig()).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("kubectl output");
        let _ = writer.join();
        out
    }
}

fn kubectl<'a>(s: &'a Server, version: &str) -> Kubectl<'a> {
    Kubectl {
        bin: kubectl_versions_dir().join(format!("kubectl.{version}")),
        server: s,
    }
}

fn running(s: &Server, pod: &str) {
    wait_for(
        &format!("pod {pod} to run"),
        Duration::from_secs(90),
        || {
            let p = get_json(s, &["pod", pod])?;
            (p["status"]["phase"] == "Running").then_some(())
        },
    );
}

/// A `kubectl port-forward` whose local port was read from its first line.
struct Forward {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Forward {
    fn start(k: &Kubectl, pod: &str, remote: u16) -> Forward {
        let mut child = k
            .command(&[
                "port-forward",
                &format!("pod/{pod}"),
                &format!(":{remote}"),
                "--address",
                "127.0.0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "port-forward printed nothing: {}",
                stderr.lock().expect("stderr")
            )
        });
        let port = first
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        std::thread::spawn(move || for _ in lines {});
        Forward {
            child,
            port,
            stderr,
        }
    }

    /// `GET path` over HTTP/1.0 through the forward: the body.
    fn get(&self, path: &str) -> Vec<u8> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the forward");
        tcp.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).expect("response");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!("no HTTP response: {:?}", String::from_utf8_lossy(&response))
            });
        assert!(
            response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&response[..split])
        );
        response.split_off(split + 4)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn exec_checks(k: &Kubectl, v: &str) {
    // Exit codes and both output streams.
    let out = k.run(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out-$0; echo err >&2; exit 3",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{v}: {stdout}{stderr}");
    assert_eq!(stdout, "out-sh\n", "{v}: {stderr}");
    assert!(stderr.contains("err\n"), "{v}: {stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{v}: {stderr}"
    );
    let out = k.run(&["exec", "box", "--", "true"]);
    assert!(out.status.success(), "{v}: {:?}", text(&out));

    // Piped stdin, half-closed at its end.
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let out = k.run_stdin(
        &["exec", "-i", "box", "--", "sh", "-c", "tr a-z A-Z | wc -l"],
        &input,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{v}: {stdout}{stderr}");
    assert_eq!(stdout.trim(), "20000", "{v}: {stderr}");

    // A client that goes away takes its command with it: nothing runs on unseen.
    let marker = format!("/tmp/left-{}", v.replace('.', "-"));
    let mut left = k
        .command(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            &format!("echo $$ > {marker}; exec sleep 600"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl exec");
    let pid = wait_for(
        &format!("{v}: the long exec to start"),
        Duration::from_secs(30),
        || {
            let out = k.run(&["exec", "box", "--", "cat", &marker]);
            let pid = text(&out).0.trim().to_string();
            (out.status.success() && !pid.is_empty()).then_some(pid)
        },
    );
    let _ = left.kill();
    let _ = left.wait();
    wait_for(
        &format!("{v}: the abandoned command to end"),
        Duration::from_secs(30),
        || {
            let out = k.run(&["exec", "box", "--", "sh", "-c", &format!("kill -0 {pid}")]);
            (!out.status.success()).then_some(())
        },
    );

    // Errors worded as upstream.
    let out = k.run(&["exec", "box", "-c", "nope", "--", "true"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("container nope is not valid for pod box"),
        "{v}: {stderr}"
    );
}

fn cp_checks(k: &Kubectl, v: &str, dir: &Path) {
    let local = dir.join(format!("up-{v}.bin"));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &payload).expect("write local file");
    let remote = format!("box:/tmp/cp-{v}.bin");
    let out = k.run(&["cp", local.to_str().expect("path"), &remote]);
    assert!(out.status.success(), "{v} cp up: {:?}", text(&out));
    let back = dir.join(format!("down-{v}.bin"));
    let out = k.run(&["cp", &remote, back.to_str().expect("path")]);
    assert!(out.status.success(), "{v} cp down: {:?}", text(&out));
    assert_eq!(std::fs::read(&back).expect("read back"), payload, "{v}");
}

fn tty_checks(k: &Kubectl, v: &str) {
    // A real terminal for kubectl (script's pty), sized 45x123 before kubectl starts: the
    // remote shell sees a tty and kubectl's size, sent on the resize stream.
    let remote = "for i in $(seq 100); do s=$(stty size); [ \"$s\" = \"45 123\" ] && break; usleep 50000; done; echo size=$s; [ -t 0 ] && echo stdin-is-a-tty; echo tty=$(tty); exit 5";
    let out = on_a_terminal(k, &format!("exec -it box -- sh -c '{remote}'"), "");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(5), "{v}: {stdout}{stderr}");
    assert!(stdout.contains("size=45 123"), "{v}: {stdout}");
    assert!(stdout.contains("stdin-is-a-tty"), "{v}: {stdout}");
    // The pty is the container's own devpts (its /dev/pts holds it), not the host's: `tty`
    // names it instead of saying "not a tty".
    assert!(stdout.contains("tty=/dev/pts/"), "{v}: {stdout}");
}

/// A pod per kubectl version, named for it, whose container talks on its own stdio.
fn stdio_pod(s: &Server, name: &str, tty: bool, script: &str) {
    capstan_e2e::apply(
        s,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
             containers:\n  - name: c\n    image: busybox\n    stdin: true\n    stdinOnce: true\n    \
             tty: {tty}\n    command: [sh, -c, {script:?}]\n"
        ),
    );
}

fn attach_checks(k: &Kubectl, v: &str) {
    let tag = v.replace('.', "-");
    let s = k.server;
    // Piped stdin to the container's own stdin; stdinOnce: the session's end is its EOF.
    let plain = format!("attach-{tag}");
    stdio_pod(
        s,
        &plain,
        false,
        "while read l; do echo got:$l; echo err:$l >&2; done; echo bye",
    );
    running(s, &plain);
    let out = k.run_stdin(&["attach", "-i", &plain], b"hello\nworld\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{v}: {stdout}{stderr}");
    assert_eq!(stdout, "got:hello\ngot:world\nbye\n", "{v}: {stderr}");
    assert!(stderr.contains("err:hello\nerr:world"), "{v}: {stderr}");
    // What the container printed went to its log as well.
    wait_for(
        &format!("{v}: {plain} to finish"),
        Duration::from_secs(30),
        || {
            let p = get_json(s, &["pod", &plain])?;
            (p["status"]["phase"] == "Succeeded").then_some(())
        },
    );
    let logs = text(&k.run(&["logs", &plain])).0;
    // Both streams share the log, so only each line's presence is certain, not the order.
    for line in ["got:hello", "got:world", "err:world", "bye"] {
        assert!(logs.lines().any(|l| l == line), "{v}: {line} in {logs:?}");
    }

    // A terminal: the container's own pty, sized by kubectl, typed into through script's.
    let term = format!("attach-tty-{tag}");
    stdio_pod(s, &term, true, "exec sh");
    running(s, &term);
    let typed = "for i in $(seq 100); do s=$(stty size); [ \"$s\" = \"45 123\" ] && break; usleep 50000; done; echo size=$s; tty; exit 7\n";
    let (stdout, stderr) = text(&on_a_terminal(k, &format!("attach -it {term}"), typed));
    assert!(stdout.contains("size=45 123"), "{v}: {stdout}{stderr}");
    // The container's own devpts, not a device of the host's.
    assert!(stdout.contains("/dev/pts/0"), "{v}: {stdout}{stderr}");
    wait_for(
        &format!("{v}: {term} to end"),
        Duration::from_secs(30),
        || {
            let p = get_json(s, &["pod", &term])?;
            let code = &p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
            (code == 7).then_some(())
        },
    );
    k.run(&["delete", "pod", &plain, &term, "--wait=false"]);
}

/// Types `typed` into `kubectl args…` run on script's terminal (45x123); what the terminal
/// showed and how kubectl exited. Every terminal check goes through here.
fn on_a_terminal(k: &Kubectl, args: &str, typed: &str) -> Output {
    // `--foreground`: kubectl stays in the terminal's foreground process group. Without it
    // timeout makes a group of its own, and kubectl's switch to raw mode from a background
    // group stops it (SIGTTOU) for ever — under dash, which does not exec the last command
    // as bash does. script runs $SHELL: pinned, so every machine runs the same shell.
    let cmd = format!(
        "stty rows 45 cols 123; timeout --foreground 60 {} {args}",
        k.bin.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("KUBECONFIG", k.server.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(typed.as_bytes()).expect("type");
    // Kept open until the session ends: script would pass an end of input on as ^D.
    let out = child.wait_with_output().expect("script");
    drop(stdin);
    out
}

/// `kubectl debug -it box --target=box`: an ephemeral container that sees the target's
/// processes, reported in `ephemeralContainerStatuses`.
fn debug_checks(k: &Kubectl, v: &str) {
    let (stdout, stderr) = text(&on_a_terminal(
        k,
        "debug -it box --image=busybox --target=box",
        "ps; echo debug-$((6*7)); exit 3\n",
    ));
    assert!(stdout.contains("debug-42"), "{v}: {stdout}{stderr}");
    assert!(stdout.contains("sleep 86400"), "{v}: {stdout}{stderr}");
    // "Defaulting debug container name to debugger-x7k2p."
    let name = format!("{stdout}{stderr}")
        .split("debug container name to ")
        .nth(1)
        .and_then(|rest| rest.split(['.', '\r', '\n']).next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{v}: no debug container name in {stdout}{stderr}"));
    // The session ends when the process does; the status follows on the agent's next sync.
    wait_for(
        &format!("{v}: {name}'s exit code 3 in the pod's status"),
        Duration::from_secs(30),
        || {
            let pod = get_json(k.server, &["pod", "box"])?;
            pod["status"]["ephemeralContainerStatuses"]
                .as_array()?
                .iter()
                .any(|s| s["name"] == name.as_str() && s["state"]["terminated"]["exitCode"] == 3)
                .then_some(())
        },
    );
}

fn port_forward_checks(k: &Kubectl, v: &str, big_sha: &str, dir: &Path, large: bool) {
    let f = Forward::start(k, "web", 8080);
    assert_eq!(f.get("/index.html"), b"hello-from-httpd\n", "{v}");
    // Several connections at once over the one session.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| f.get("/index.html")))
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), b"hello-from-httpd\n", "{v}");
        }
    });
    if large {
        let started = Instant::now();
        let body = f.get("/big");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(body.len(), 50 << 20, "{v}");
        let file = dir.join(format!("big-{v}"));
        std::fs::write(&file, &body).expect("write");
        assert_eq!(sha256_of(&file), big_sha, "{v}");
        eprintln!(
            "kubectl {v}: port-forward 50 MiB in {secs:.2}s = {:.1} MB/s",
            50.0 * 1.048_576 / secs
        );
    }
    drop(f);
    // A port nothing listens on: the error stream's message, printed by kubectl.
    let f = Forward::start(k, "web", 9);
    let mut tcp = TcpStream::connect(("127.0.0.1", f.port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = tcp.write_all(b"x");
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink);
    wait_for(
        &format!("kubectl {v} to print the forwarding error"),
        Duration::from_secs(20),
        || {
            let e = f.stderr.lock().expect("stderr").clone();
            (e.contains("error forwarding port 9") && e.contains("refused")).then_some(())
        },
    );
}

async fn kube_rs_checks(s: &Server) {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    let pods: Api<Pod> = Api::default_namespaced(Client::try_from(config).expect("client"));

    let mut p = pods
        .exec(
            "box",
            ["sh", "-c", "echo out-$0; read x; echo got-$x; exit 4"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await
        .expect("kube-rs exec");
    let mut stdin = p.stdin().expect("stdin");
    let mut stdout = p.stdout().expect("stdout");
    let status = p.take_status().expect("status");
    stdin.write_all(b"abc\n").await.expect("stdin");
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.expect("stdout");
    assert_eq!(out, "out-sh\ngot-abc\n");
    let status = status.await.expect("a final status");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.reason.as_deref() == Some("ExitCode") && c.message.as_deref() == Some("4")),
        "{causes:?}"
    );

    // Attach to a container's own stdio (its stdin kept open for attach).
    stdio_pod(s, "kube-rs-attach", false, "read x; echo got-$x; exit 6");
    running(s, "kube-rs-attach");
    let mut a = pods
        .attach(
            "kube-rs-attach",
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await
        .expect("kube-rs attach");
    let mut stdin = a.stdin().expect("stdin");
    let mut stdout = a.stdout().expect("stdout");
    stdin.write_all(b"xyz\n").await.expect("stdin");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_to_string(&mut out))
        .await
        .expect("the attached output in time")
        .expect("stdout");
    assert_eq!(out, "got-xyz\n");
    wait_for("kube-rs-attach to end", Duration::from_secs(30), || {
        let p = get_json(s, &["pod", "kube-rs-attach"])?;
        let code = &p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
        (code == 6).then_some(())
    });

    let mut pf = pods
        .portforward("web", &[8080])
        .await
        .expect("kube-rs portforward");
    let mut stream = pf.take_stream(8080).expect("the port's stream");
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The channel protocol has no per-connection end: read until the body is in.
    let read = async {
        while !got.ends_with(b"hello-from-httpd\n") {
            let n = stream.read(&mut buf).await.expect("response");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the response in time");
    assert!(
        got.starts_with(b"HTTP/1.0 200") || got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    pf.abort();
}

#[test]
fn every_kubectl_execs_copies_and_forwards_ports_through_the_node() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&["run", "box", "--image=busybox", "--", "sleep", "86400"]);
    s.kubectl_ok(&[
        "run",
        "web",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-httpd > /www/index.html && \
         dd if=/dev/urandom of=/www/big bs=1048576 count=50 2>/dev/null && \
         touch /www/ready && exec httpd -f -p 8080 -h /www",
    ]);
    running(&s, "box");
    running(&s, "web");
    let latest = kubectl(&s, "1.33");
    let big_sha = wait_for("the web pod's file", Duration::from_secs(60), || {
        let out = latest.run(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "test -f /www/ready && sha256sum /www/big",
        ]);
        out.status.success().then(|| {
            text(&out)
                .0
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::thread::scope(|scope| {
        for v in VERSIONS {
            let (s, dir, big_sha) = (&s, dir.path(), big_sha.as_str());
            scope.spawn(move || {
                let k = kubectl(s, v);
                exec_checks(&k, v);
                cp_checks(&k, v, dir);
                tty_checks(&k, v);
                attach_checks(&k, v);
                debug_checks(&k, v);
                // The large transfer once per wire protocol: SPDY and SPDY in WebSocket.
                port_forward_checks(&k, v, big_sha, dir, *v == "1.29" || *v == "1.33");
            });
        }
    });
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(kube_rs_checks(&s));
}

#[test]
fn exec_into_a_pod_without_a_node_or_a_container_is_refused_as_upstream() {
    let s = Server::start();
    s.kubectl_ok(&["run", "nowhere", "--image=busybox", "--", "sleep", "1"]);
    let k = kubectl(&s, "1.33");
    let out = k.run(&["exec", "nowhere", "--", "true"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pod nowhere does not have a host assigned"),
        "{stderr}"
    );
    let out = kubectl(&s, "1.27").run(&["exec", "nowhere", "-c", "x", "--", "true"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("container x is not valid for pod nowhere"),
        "{stderr}"
    );
}

/// RBAC decides who gets in: `edit` may exec (GET for WebSocket, POST for SPDY), `view` is
/// refused exec and port-forward in upstream's words.
#[test]
fn exec_and_port_forward_need_their_subresource_permissions() {
    let s = Server::start_node(&[]);
    node_ready(&s);
    s.kubectl_ok(&["create", "namespace", "team"]);
    s.kubectl_ok(&[
        "run",
        "box",
        "-n",
        "team",
        "--image=busybox",
        "--",
        "sleep",
        "86400",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "e",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        "team",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "v",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "team",
    ]);
    wait_for("box to run", Duration::from_secs(90), || {
        let p = get_json(&s, &["pod", "box", "-n", "team"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    let alice = capstan_e2e::user_kubeconfig(&s, "alice", &[]);
    let bob = capstan_e2e::user_kubeconfig(&s, "bob", &[]);
    let as_user = |kc: &Path, v: &str, args: &[&str]| {
        Command::new(kubectl_versions_dir().join(format!("kubectl.{v}")))
            .env("KUBECONFIG", kc)
            .args(args)
            .output()
            .expect("kubectl")
    };
    for v in ["1.27", "1.33"] {
        let out = as_user(
            &alice,
            v,
            &["exec", "-n", "team", "box", "--", "echo", "in"],
        );
        assert_eq!(text(&out).0, "in\n", "{v}: {:?}", text(&out));
        let out = as_user(&bob, v, &["exec", "-n", "team", "box", "--", "echo", "in"]);
        assert!(!out.status.success(), "{v}");
        assert!(
            text(&out).1.contains(
                "pods \"box\" is forbidden: User \"bob\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"team\""
            ),
            "{v}: {:?}",
            text(&out)
        );
    }
    let out = as_user(
        &bob,
        "1.33",
        &["port-forward", "-n", "team", "pod/box", ":80"],
    );
    assert!(
        text(&out)
            .1
            .contains("cannot create resource \"pods/portforward\""),
        "{:?}",
        text(&out)
    );
}

/// `pods/ephemeralcontainers` (what `kubectl debug` writes) only ever adds: a field an
/// ephemeral container may not set, a taken name and a removal are refused with their field
/// paths; the pod's main endpoint keeps the stored list.
#[test]
fn ephemeral_containers_are_only_added_and_validated_as_upstream() {
    let s = Server::start();
    s.kubectl_ok(&["run", "eph", "--image=busybox", "--", "sleep", "1"]);
    let path = "/api/v1/namespaces/default/pods/eph/ephemeralcontainers";
    let put = |containers: serde_json::Value| {
        let mut pod = get_json(&s, &["pod", "eph"]).expect("pod");
        pod["spec"]["ephemeralContainers"] = containers;
        s.kubectl_stdin(&["replace", "--raw", path, "-f", "-"], &pod.to_string())
    };
    let out = put(serde_json::json!([
        {"name": "eph", "image": "busybox"},
        {"name": "dbg", "image": "busybox", "ports": [{"containerPort": 80}]},
        {"name": "dbg2", "image": "busybox", "targetContainerName": "nope"}
    ]));
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    for want in [
        "spec.ephemeralContainers[0].name: Duplicate value: \"eph\"",
        "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
        "spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"",
    ] {
        assert!(stderr.contains(want), "{want} in {stderr}");
    }
    let out = put(serde_json::json!([{"name": "dbg", "image": "busybox", "resources": {}}]));
    assert!(out.status.success(), "{:?}", text(&out));
    let names = s.kubectl_ok(&[
        "get",
        "pod",
        "eph",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(names, "dbg");
    let out = put(serde_json::json!([]));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(
            "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed"
        ),
        "{stderr}"
    );
    // The main endpoint keeps the stored list whatever it is sent.
    let mut pod = get_json(&s, &["pod", "eph"]).expect("pod");
    pod["spec"]["ephemeralContainers"] = serde_json::json!([]);
    let out = s.kubectl_stdin(&["replace", "-f", "-"], &pod.to_string());
    assert!(out.status.success(), "{:?}", text(&out));
    let names = s.kubectl_ok(&[
        "get",
        "pod",
        "eph",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(names, "dbg");
}
