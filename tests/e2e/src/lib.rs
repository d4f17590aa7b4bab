//! Harness for end-to-end tests: starts the built `capstan` binary on a free port with a
//! fresh data dir and runs the real `kubectl` against it.

pub mod registry;
mod watchdog;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `$CAPSTAN_BIN`, else the workspace's release build.
pub fn capstan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPSTAN_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/capstan");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --release` first (scripts/test does)",
        p.display()
    );
    p
}

/// The port the server's kubeconfig points at (it binds port 0 and writes the real one).
fn served_port(kubeconfig: &Path) -> u16 {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no server address in {}:\n{text}", kubeconfig.display()))
}

pub struct Server {
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// Time from spawn to the "export KUBECONFIG" line (printed once it serves).
    pub startup: Duration,
    /// The node agent runs (pods are cleaned up before the server is killed).
    pub with_agent: bool,
    _watchdog: watchdog::Watchdog,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut s = Server::start_in(&data_dir, 0);
        s._dir = Some(dir);
        s
    }

    /// Start on an existing data dir (to test restarts); port 0 lets the server pick one
    /// (no race with other tests for a probed port), then `port` says which.
    pub fn start_in(data_dir: &Path, port: u16) -> Server {
        Server::start_with(data_dir, port, &[])
    }

    /// Start on an existing data dir with extra `capstan server` flags.
    pub fn start_with_args(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(data_dir, 0, extra)
    }

    /// Start with extra `capstan server` flags on a fresh data dir.
    pub fn start_args(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut s = Server::start_with(&data_dir, 0, extra);
        s._dir = Some(dir);
        s
    }

    /// Servers run without the node agent unless `extra` holds `--with-agent` (a marker of
    /// this harness, not a flag): most suites need no real node, and agents of parallel
    /// tests would all run pods on this machine.
    fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::spawn(data_dir, &format!("127.0.0.1:{port}"), extra)
    }

    fn spawn(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let started = Instant::now();
        let with_agent = extra.contains(&"--with-agent");
        let extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| *a != "--with-agent")
            .collect();
        let mut child = Command::new(capstan_bin())
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen])
            .args((!with_agent).then_some("--no-agent"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn capstan");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read capstan stdout");
        let startup = started.elapsed();
        let expected = format!(
            "export KUBECONFIG={}",
            data_dir.join("kubeconfig").display()
        );
        assert_eq!(
            line.trim(),
            expected,
            "capstan should print the one line a user needs"
        );
        let port = served_port(&data_dir.join("kubeconfig"));
        watchdog::register(child.id(), data_dir.to_path_buf(), with_agent);
        Server {
            data_dir: data_dir.to_path_buf(),
            port,
            child: Some(child),
            _dir: None,
            startup,
            with_agent,
            _watchdog: watchdog::Watchdog::start(
                format!(
                    "the test with the server on port {port} ({})",
                    std::thread::current().name().unwrap_or("?")
                ),
                data_dir.join("kubeconfig"),
            ),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// A kube-rs client for this server, from the kubeconfig it wrote (the admin).
    pub async fn kube_client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kubeconfig");
        kube::Client::try_from(config).expect("client")
    }

    /// Run kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_command(&self.kubeconfig())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Run kubectl, require success, return stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        kubectl_stdin_as(&self.kubeconfig(), args, input)
    }

    /// Start a long-running kubectl (e.g. `get -w`) whose output is read after `stop`.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        kubectl_command(&self.kubeconfig())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl")
    }

    /// Start a long-running kubectl whose stdout lines are collected as they arrive, so a
    /// test waits for what it expects instead of sleeping.
    pub fn kubectl_follow(&self, args: &[&str]) -> Follow {
        let mut child = self.kubectl_spawn(args);
        let stdout = child.stdout.take().expect("kubectl stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Follow { child, lines }
    }

    /// SIGKILL the server, keeping its data dir.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            watchdog::unregister(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let agent_ran = self.with_agent && self.child.is_some();
        self.kill();
        if agent_ran {
            // Containers outlive the server (as they outlive a restarted agent): the cleanup
            // stops them and removes the mounts, cgroups and links the agent holds.
            // A container still dying can keep a step from finishing: one more pass.
            if let Err(e) = self.cleanup().or_else(|_| {
                std::thread::sleep(Duration::from_secs(1));
                self.cleanup()
            }) {
                eprintln!("capstan cleanup of {}: {e}", self.data_dir.display());
            }
        }
    }
}

impl Server {
    /// `capstan cleanup --data-dir D` (the server must be stopped); what it printed.
    pub fn cleanup(&self) -> Result<String, String> {
        let out = Command::new(capstan_bin())
            .args(["cleanup", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .map_err(|e| e.to_string())?;
        let (stdout, stderr) = text(&out);
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{stderr}"))
        }
    }
}

/// A /24 of its own for each node server: agents of parallel tests each make a bridge, and
/// two bridges with one subnet would steal each other's replies.
pub fn unique_pod_cidr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("10.{}.{}.0/24", 200 + pid % 50, (pid / 50 + n * 37) % 256)
}

/// Where `scripts/build-test-images` leaves the test images (`$CAPSTAN_TEST_IMAGES`, else
/// `<workspace>/target/test-images`).
pub fn test_images_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPSTAN_TEST_IMAGES") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-images")
}

impl Server {
    /// A server that is also a node: the agent runs, and the busybox test image is in the
    /// images folder it imports at start (`busybox` to pods).
    pub fn start_node(extra: &[&str]) -> Server {
        Server::start_node_on("127.0.0.1:0", extra)
    }

    /// `start_node` listening on `listen` (`0.0.0.0:0`: reachable from other network
    /// namespaces; kubectl still uses loopback).
    pub fn start_node_on(listen: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let images = data_dir.join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        let archive = test_images_dir().join("busybox.tar");
        assert!(
            archive.exists(),
            "{} is missing: scripts/build-test-images makes it",
            archive.display()
        );
        std::fs::copy(&archive, images.join("busybox.tar")).expect("copy the busybox image");
        let cidr = unique_pod_cidr();
        let mut args = vec!["--with-agent", "--pod-cidr", &cidr];
        args.extend_from_slice(extra);
        let mut s = Server::spawn(&data_dir, listen, &args);
        s._dir = Some(dir);
        s
    }
}

/// A pod's pinned network namespace (`/run/capstan/<instance>/sandboxes/<uid>/net`): tests
/// run host tools (curl, wget) in it to act as the pod on the network.
pub fn pod_netns(uid: &str) -> PathBuf {
    std::fs::read_dir("/run/capstan")
        .expect("/run/capstan")
        .flatten()
        .map(|e| e.path().join("sandboxes").join(uid).join("net"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no network namespace for pod {uid}"))
}

/// Waits up to 30 s until a Node reports Ready (the agent of a `start_node` server
/// registered).
pub fn node_ready(s: &Server) {
    wait_for(
        "the node to register Ready",
        Duration::from_secs(30),
        || {
            let nodes = get_json(s, &["nodes"])?;
            let ready = nodes["items"].as_array()?.iter().any(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            });
            ready.then_some(())
        },
    );
}

/// Where `kubectl.1.27` … `kubectl.1.33` are: `$KUBECTL_VERSIONS_DIR`, else beside the
/// `kubectl` the PATH names (a dispatcher that picks a version).
pub fn kubectl_versions_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBECTL_VERSIONS_DIR") {
        return PathBuf::from(d);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl on the PATH");
    std::fs::canonicalize(&kubectl)
        .expect("resolve kubectl")
        .parent()
        .expect("kubectl's directory")
        .to_path_buf()
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running kubectl and the stdout lines it has printed so far.
pub struct Follow {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follow {
    /// Wait up to `within` until a printed line satisfies `pred`; panics with everything
    /// printed so far if none does.
    pub fn wait_for_line(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if self.lines().iter().any(|l| pred(l)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl printed no line with {what} within {within:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Wait up to `within` for kubectl to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns Some, or fail naming what was awaited.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl get ARGS -o json`, or None if kubectl failed.
/// `Server::kube_client` as a function, for suites that pass it around.
pub async fn kube_client(s: &Server) -> kube::Client {
    s.kube_client().await
}

pub fn get_json(s: &Server, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(&all);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// kubectl with `kubeconfig` and a discovery cache of that server's own. kubectl caches
/// discovery under ~/.kube/cache by host and port; servers of earlier tests had the same
/// loopback ports, so a stale cache once named another server's CRD (`kubectl get all`:
/// "the server doesn't have a resource type webapps").
pub fn kubectl_command(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", kubectl_cache_dir(kubeconfig));
    cmd
}

/// The discovery cache of the server `kubeconfig` reaches, for kubectl runs the harness
/// does not start itself (`KUBECACHEDIR`).
pub fn kubectl_cache_dir(kubeconfig: &Path) -> PathBuf {
    kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join("kubectl-cache")
}

/// kubectl as `kubeconfig`'s user (an admin's or one from `user_kubeconfig`) with `input`
/// on its standard input.
pub fn kubectl_stdin_as(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = kubectl_command(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

/// `kubectl apply -f -` of `yaml`, which must succeed.
pub fn apply(s: &Server, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// A kubeconfig for `user` in `groups`, minted by `capstan kubeconfig` (a client certificate
/// from the server's CA), written into the server's data dir.
pub fn user_kubeconfig(s: &Server, user: &str, groups: &[&str]) -> PathBuf {
    let mut cmd = Command::new(capstan_bin());
    cmd.args(["kubeconfig", "--user", user, "--data-dir"])
        .arg(&s.data_dir);
    for g in groups {
        cmd.args(["--group", g]);
    }
    let out = cmd.output().expect("capstan kubeconfig");
    assert!(out.status.success(), "{:?}", text(&out));
    // KUBECONFIG is a ':'-separated list: `system:node:x` must not name the file.
    let path = s
        .data_dir
        .join(format!("{}.kubeconfig", user.replace(':', "-")));
    std::fs::write(&path, &out.stdout).expect("write the user's kubeconfig");
    path
}

/// A stand-alone `capstan agent --kubeconfig` (a real node of its own data dir), killed and
/// cleaned up (`capstan cleanup`) when dropped.
pub struct Agent {
    pub data_dir: PathBuf,
    pub node_name: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent for node `node_name` with `kubeconfig`'s credentials; the busybox test
    /// image is in the images folder it imports at start.
    pub fn start(kubeconfig: &Path, node_name: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let images = data_dir.join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::copy(
            test_images_dir().join("busybox.tar"),
            images.join("busybox.tar"),
        )
        .expect("copy the busybox image");
        let child = Command::new(capstan_bin())
            .args(["agent", "--kubeconfig"])
            .arg(kubeconfig)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--node-name", node_name])
            .args(["--kubelet-listen", "127.0.0.1:0"])
            .args(["--pod-cidr", &unique_pod_cidr()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn capstan agent");
        watchdog::register(child.id(), data_dir.clone(), true);
        Agent {
            data_dir,
            node_name: node_name.to_string(),
            child: Some(child),
            _dir: dir,
        }
    }

    /// SIGKILL the agent (its containers keep running until `cleanup`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            watchdog::unregister(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let out = Command::new(capstan_bin())
            .args(["cleanup", "--data-dir"])
            .arg(&self.data_dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "capstan cleanup of {}: {:?}",
                self.data_dir.display(),
                text(&o)
            ),
            Err(e) => eprintln!("capstan cleanup of {}: {e}", self.data_dir.display()),
        }
    }
}

/// The attempt count in a controller's failure message (`… (attempt 3; next attempt in 1s at
/// …)`). Tests compare it with `>=`: under load a poll can miss an attempt's short window.
pub fn attempt_in(message: &str) -> Option<u32> {
    let rest = message.rsplit_once("(attempt ")?.1;
    rest.split(';').next()?.trim().parse().ok()
}
