//! The container runtime against the real kernel: overlayfs, cgroups, namespaces, the capstan
//! binary as shim, a busybox rootfs from Debian's busybox-static. Needs root (as in CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use capstan_agent::logs;
use capstan_agent::runtime::{
    ContainerSpec, ContainerState, Mount, MountKind, Resources, Runtime, RuntimeConfig,
    RuntimeError, SandboxInfo, SandboxSpec, Security,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix_is_root()
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The capstan binary: `$CAPSTAN_BIN`, else beside this test's `deps` folder.
fn capstan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPSTAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("capstan")
}

/// A test's world: its own dirs, cgroup parent, runtime; `cleanup` removes it all and checks
/// nothing is left.
struct Fixture {
    root: PathBuf,
    runtime: Runtime,
    layer: PathBuf,
    name: String,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        if !is_root() {
            eprintln!("skipping {test}: needs root");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("rt{}-{n}", std::process::id());
        let root = std::env::temp_dir().join(format!("capstan-{name}"));
        std::fs::create_dir_all(&root).expect("test dir");
        let layer = root.join("layer");
        busybox_layer(&layer);
        let config = RuntimeConfig {
            state_root: root.join("state"),
            pods_root: root.join("pods"),
            cgroup_parent: format!("capstan-test-{name}"),
            shim_binary: capstan_bin(),
            log_max_size: 10 * 1024 * 1024,
            log_max_files: 3,
        };
        Some(Fixture::with_config(root, layer, name, config))
    }

    fn with_config(root: PathBuf, layer: PathBuf, name: String, config: RuntimeConfig) -> Fixture {
        let runtime = Runtime::open(config).expect("open runtime");
        Fixture {
            root,
            runtime,
            layer,
            name,
        }
    }

    fn pod(&self, suffix: &str) -> SandboxSpec {
        SandboxSpec {
            pod_uid: format!("{}-{suffix}", self.name),
            namespace: "default".into(),
            name: suffix.into(),
            hostname: format!("host-{suffix}"),
            host_network: false,
            share_process_namespace: false,
            resources: Resources::default(),
            qos: Default::default(),
        }
    }

    fn container(&self, sandbox: &SandboxSpec, name: &str, argv: &[&str]) -> ContainerSpec {
        let log_path =
            logs::container_log_path(&self.runtime.config().pods_root, &sandbox.pod_uid, name, 0);
        ContainerSpec {
            id: format!("{}-{name}-0", sandbox.pod_uid),
            pod_uid: sandbox.pod_uid.clone(),
            container_name: name.into(),
            attempt: 0,
            layers: vec![self.layer.clone()],
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["GREETING=hi".into()],
            working_dir: "/".into(),
            security: Security::default(),
            mounts: vec![],
            resources: Resources::default(),
            hostname: sandbox.hostname.clone(),
            log_path,
            labels: BTreeMap::from([("name".to_string(), name.to_string())]),
            stdin: false,
            stdin_once: false,
            tty: false,
            pid_ns: None,
        }
    }

    /// Stops and removes every container and sandbox, then checks no mount, cgroup or
    /// process is left.
    async fn cleanup(self, pods: &[&SandboxSpec]) {
        for record in self.runtime.list().await.expect("list") {
            self.runtime
                .stop(&record.id, Duration::ZERO)
                .await
                .expect("stop");
            self.runtime.remove(&record.id).await.expect("remove");
        }
        for pod in pods {
            self.runtime
                .remove_sandbox(&pod.pod_uid)
                .await
                .expect("remove sandbox");
        }
        self.runtime
            .remove_cgroup_parent()
            .expect("remove cgroup parent");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        // With the slash: another test's dir may share this one's name as a prefix.
        let root = format!("{}/", self.root.display());
        assert!(
            !mountinfo.contains(&root),
            "mounts left below {root}:\n{mountinfo}"
        );
        let parent = &self.runtime.config().cgroup_parent;
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").expect("cgroup root") {
            let dir = hierarchy.expect("entry").path().join(parent);
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
        assert!(
            !Path::new("/sys/fs/cgroup").join(parent).exists(),
            "cgroup left behind"
        );
        let ps = processes_mentioning(&root);
        assert!(ps.is_empty(), "processes left behind: {ps:?}");
        std::fs::remove_dir_all(&self.root).expect("remove test dir");
    }
}

/// A test that failed before its `cleanup` still leaves nothing running or mounted on the host
/// (CI machines run the suite again; a leaked container would outlive it).
impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let runtime = &self.runtime;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                if let Err(e) = rt.block_on(runtime.remove_everything()) {
                    eprintln!("cleaning up after a failed test: {e}");
                }
            });
        });
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Command lines of processes whose cmdline mentions `needle` (our shims carry the state dir).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(text);
            }
        }
    }
    found
}

/// A layer dir with Debian's static busybox and its applet links.
fn busybox_layer(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: apt-get install busybox-static (scripts/test does)"
    );
    std::fs::create_dir_all(dir.join("bin")).expect("bin");
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))
                .expect("applet link");
        }
    }
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// Polls the log until a line ends with `suffix` (or, with "", until any line), for up to 10 s;
/// returns the lines seen.
async fn wait_for_log(path: &Path, suffix: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(path);
        if lines.iter().any(|l| l.ends_with(suffix)) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn exit_code(state: &ContainerState) -> i32 {
    match state {
        ContainerState::Exited { exit_code, .. } => *exit_code,
        other => panic!("not exited: {other:?}"),
    }
}

async fn run_to_exit(f: &Fixture, sandbox: &SandboxInfo, spec: &ContainerSpec) -> ContainerState {
    f.runtime
        .start_container(sandbox, spec)
        .await
        .expect("start");
    f.runtime.wait(&spec.id).await.expect("wait")
}

#[tokio::test]
async fn echo_writes_a_cri_log_line_and_exits_zero() {
    let Some(f) = Fixture::new("echo") else {
        return;
    };
    let pod = f.pod("echo");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(
        &pod,
        "echo",
        &[
            "sh",
            "-c",
            "echo $GREETING; echo err >&2; exec grep SigIgn /proc/self/status",
        ],
    );
    let state = run_to_exit(&f, &sandbox, &spec).await;
    assert_eq!(exit_code(&state), 0);
    let lines = log_lines(&spec.log_path);
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hi")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F err")),
        "{lines:?}"
    );
    // SIGPIPE, which the (Rust) shim ignores, is not passed on ignored to the container.
    let ignored = lines
        .iter()
        .find_map(|l| l.split_once("SigIgn:\t").map(|(_, v)| v.trim().to_string()))
        .expect("a SigIgn line");
    let ignored = u64::from_str_radix(&ignored, 16).expect("hex mask");
    assert_eq!(ignored & (1 << (13 - 1)), 0, "SIGPIPE ignored: {ignored:x}");
    assert!(logs::exited_marker_path(&spec.log_path).exists());
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn exit_code_is_recorded() {
    let Some(f) = Fixture::new("exit3") else {
        return;
    };
    let pod = f.pod("exit3");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(&pod, "three", &["sh", "-c", "exit 3"]);
    let state = run_to_exit(&f, &sandbox, &spec).await;
    assert_eq!(exit_code(&state), 3);
    if let ContainerState::Exited {
        oom_killed,
        started_at,
        finished_at,
        ..
    } = state
    {
        assert!(!oom_killed);
        assert!(started_at.expect("started") <= finished_at);
    }
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn a_missing_executable_fails_the_start_clearly() {
    let Some(f) = Fixture::new("missing") else {
        return;
    };
    let pod = f.pod("missing");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(&pod, "nope", &["no-such-command", "x"]);
    let err = f
        .runtime
        .start_container(&sandbox, &spec)
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Create { .. }), "{text}");
    assert!(text.contains("no-such-command"), "{text}");
    assert!(text.contains("not found"), "{text}");
    assert!(matches!(
        f.runtime.state(&spec.id).await.expect("state"),
        ContainerState::Exited { .. }
    ));
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed() {
    let Some(f) = Fixture::new("oom") else {
        return;
    };
    let pod = f.pod("oom");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let mut spec = f.container(
        &pod,
        "hog",
        // 64 MiB of zeros held in a shell variable.
        &[
            "sh",
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    spec.resources.memory_limit = Some(20 * 1024 * 1024);
    let state = run_to_exit(&f, &sandbox, &spec).await;
    match state {
        ContainerState::Exited {
            oom_killed,
            exit_code,
            ..
        } => {
            assert!(oom_killed, "exit {exit_code}, not OOM killed");
            assert_ne!(exit_code, 0);
        }
        other => panic!("{other:?}"),
    }
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn stop_kills_after_the_grace_period_and_terminates_at_once_otherwise() {
    let Some(f) = Fixture::new("stop") else {
        return;
    };
    let pod = f.pod("stop");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let stubborn = f.container(
        &pod,
        "stubborn",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
    );
    // PID 1 of a namespace gets only the signals it handles: this one handles TERM.
    let polite = f.container(
        &pod,
        "polite",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; sleep 1000 & wait",
        ],
    );
    for spec in [&stubborn, &polite] {
        f.runtime
            .start_container(&sandbox, spec)
            .await
            .expect("start");
        // Signalled before its trap is set, a shell would not react to TERM.
        let lines = wait_for_log(&spec.log_path, " ready").await;
        assert!(lines.iter().any(|l| l.ends_with(" ready")), "{lines:?}");
    }
    let grace = Duration::from_secs(2);
    let began = Instant::now();
    let state = f.runtime.stop(&polite.id, grace).await.expect("stop");
    assert!(began.elapsed() < grace, "took {:?}", began.elapsed());
    assert_eq!(exit_code(&state), 0);

    let began = Instant::now();
    let state = f.runtime.stop(&stubborn.id, grace).await.expect("stop");
    assert!(began.elapsed() >= grace, "took {:?}", began.elapsed());
    assert_eq!(exit_code(&state), 137);
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn containers_of_a_pod_share_hostname_and_network_but_not_mounts() {
    let Some(f) = Fixture::new("share") else {
        return;
    };
    let pod = f.pod("share");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    // Both stay alive while compared: the kernel recycles a freed namespace's inode number, so
    // two containers run one after the other can show the same `mnt:[N]` without sharing it.
    let script = "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; readlink /proc/self/ns/ipc; echo done; exec sleep 1000";
    let a = f.container(&pod, "a", &["sh", "-c", script]);
    let b = f.container(&pod, "b", &["sh", "-c", script]);
    let mut outputs = Vec::new();
    for spec in [&a, &b] {
        f.runtime
            .start_container(&sandbox, spec)
            .await
            .expect("start");
        let lines: Vec<String> = wait_for_log(&spec.log_path, " done")
            .await
            .iter()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
            .collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        outputs.push(lines);
    }
    for spec in [&a, &b] {
        f.runtime
            .stop(&spec.id, Duration::from_secs(1))
            .await
            .expect("stop");
    }
    assert_eq!(outputs[0][0], "host-share");
    assert_eq!(outputs[1][0], "host-share");
    assert_eq!(outputs[0][1], outputs[1][1], "same network namespace");
    assert_eq!(outputs[0][3], outputs[1][3], "same IPC namespace");
    assert_ne!(outputs[0][2], outputs[1][2], "separate mount namespaces");
    let host_net = std::fs::read_link("/proc/self/ns/net").expect("host netns");
    assert_ne!(
        outputs[0][1],
        host_net.to_string_lossy(),
        "not the host's network"
    );
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn a_restarted_runtime_finds_a_running_container_and_stops_it() {
    let Some(f) = Fixture::new("restart") else {
        return;
    };
    let pod = f.pod("restart");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(&pod, "long", &["sleep", "1000"]);
    f.runtime
        .start_container(&sandbox, &spec)
        .await
        .expect("start");
    let config = f.runtime.config().clone();
    let (root, layer, name) = (f.root.clone(), f.layer.clone(), f.name.clone());
    drop(f);
    // The agent restarts: a new Runtime over the same dirs.
    let f = Fixture::with_config(root, layer, name, config);
    let records = f.runtime.list().await.expect("list");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, spec.id);
    assert_eq!(records[0].pod_uid, pod.pod_uid);
    assert_eq!(
        records[0].labels.get("name").map(String::as_str),
        Some("long")
    );
    assert!(
        matches!(records[0].state, ContainerState::Running { .. }),
        "{:?}",
        records[0].state
    );
    let state = f
        .runtime
        .stop(&spec.id, Duration::from_millis(200))
        .await
        .expect("stop");
    assert_eq!(exit_code(&state), 137);
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn logs_rotate_keeping_at_most_max_files() {
    let Some(f) = Fixture::new("rotate") else {
        return;
    };
    let mut config = f.runtime.config().clone();
    config.log_max_size = 4096;
    config.log_max_files = 3;
    let (root, layer, name) = (f.root.clone(), f.layer.clone(), f.name.clone());
    drop(f);
    let f = Fixture::with_config(root, layer, name, config);
    let pod = f.pod("rotate");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(
        &pod,
        "chatty",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done",
        ],
    );
    assert_eq!(exit_code(&run_to_exit(&f, &sandbox, &spec).await), 0);
    let dir = spec.log_path.parent().expect("log dir");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".exited"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["0.log", "0.log.1", "0.log.2"]);
    let last = log_lines(&spec.log_path);
    assert!(last.last().expect("a line").ends_with("stdout F line 1999"));
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn exec_returns_output_and_exit_code() {
    let Some(f) = Fixture::new("exec") else {
        return;
    };
    let pod = f.pod("exec");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(
        &pod,
        "target",
        &["sh", "-c", "echo ready > /tmp/mark; sleep 1000"],
    );
    f.runtime
        .start_container(&sandbox, &spec)
        .await
        .expect("start");
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let deadline = Instant::now() + Duration::from_secs(10);
    // The container writes its mark right after starting.
    let out = loop {
        let out = f
            .runtime
            .exec(
                &spec.id,
                &argv("cat /tmp/mark; hostname; echo oops >&2; exit 7"),
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        if out.stdout.starts_with(b"ready") || Instant::now() > deadline {
            break out;
        }
    };
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\nhost-exec\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert!(!out.timed_out);

    let out = f
        .runtime
        .exec(&spec.id, &argv("sleep 100"), Duration::from_millis(300))
        .await
        .expect("exec");
    assert!(out.timed_out, "{out:?}");
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn mounts_and_a_read_only_rootfs_apply() {
    let Some(f) = Fixture::new("mounts") else {
        return;
    };
    let pod = f.pod("mounts");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let volume = sandbox.pod_dir.join("volumes/data");
    std::fs::create_dir_all(&volume).expect("volume");
    std::fs::write(volume.join("hello"), "from the host").expect("volume file");
    let mut spec = f.container(
        &pod,
        "m",
        &[
            "sh",
            "-c",
            "cat /data/hello; echo; touch /x 2>/dev/null && echo rootfs-writable || echo rootfs-ro; \
             echo w > /scratch/f && echo tmpfs-ok; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; id -u",
        ],
    );
    spec.security.read_only_rootfs = true;
    spec.security.uid = 1000;
    spec.security.gid = 1000;
    spec.mounts = vec![
        Mount {
            source: volume.clone(),
            destination: "/data".into(),
            read_only: true,
            kind: MountKind::Bind,
        },
        Mount {
            source: PathBuf::new(),
            destination: "/scratch".into(),
            read_only: false,
            kind: MountKind::Tmpfs {
                size_bytes: Some(1 << 20),
            },
        },
    ];
    assert_eq!(exit_code(&run_to_exit(&f, &sandbox, &spec).await), 0);
    let text: Vec<String> = log_lines(&spec.log_path)
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(
        text,
        vec!["from the host", "rootfs-ro", "tmpfs-ok", "tmpfs", "1000"]
    );
    f.cleanup(&[&pod]).await;
}

/// The shim's record of itself (`<state root>/containers/<id>/shim.json`).
fn shim_pid(f: &Fixture, id: &str) -> i32 {
    let path = f
        .runtime
        .config()
        .state_root
        .join("containers")
        .join(id)
        .join("shim.json");
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("shim.json")).expect("json");
    value["pid"].as_i64().expect("pid") as i32
}

#[tokio::test]
async fn a_dead_shim_is_detected_and_its_container_cleaned_up() {
    let Some(f) = Fixture::new("deadshim") else {
        return;
    };
    let pod = f.pod("deadshim");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(&pod, "orphan", &["sleep", "1000"]);
    f.runtime
        .start_container(&sandbox, &spec)
        .await
        .expect("start");
    let shim = shim_pid(&f, &spec.id);
    std::process::Command::new("kill")
        .args(["-KILL", &shim.to_string()])
        .status()
        .expect("kill the shim");
    // wait() follows the shim's pidfd, so it returns once the shim is gone.
    let state = f.runtime.wait(&spec.id).await.expect("wait");
    assert_eq!(exit_code(&state), 255);
    let records = f.runtime.list().await.expect("list");
    assert!(matches!(records[0].state, ContainerState::Exited { .. }));
    // remove() kills what the dead shim left running and deletes it; cleanup checks.
    f.runtime.remove(&spec.id).await.expect("remove");
    f.cleanup(&[&pod]).await;
}

/// Figures for the report: start latency (p50/p90 of 20 busybox starts), the shim's RSS, and
/// the disk a container's state and writable layer take. Run with `--nocapture` to see them.
#[tokio::test]
async fn start_latency_and_overhead_figures() {
    let Some(f) = Fixture::new("figures") else {
        return;
    };
    let pod = f.pod("figures");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let spec = f.container(&pod, &format!("c{i}"), &["sleep", "1000"]);
        let began = Instant::now();
        f.runtime
            .start_container(&sandbox, &spec)
            .await
            .expect("start");
        latencies.push(began.elapsed());
        assert!(matches!(
            f.runtime.state(&spec.id).await.expect("state"),
            ContainerState::Running { .. }
        ));
        ids.push(spec.id);
    }
    latencies.sort();
    // Resident and private (anonymous: not shared with the other shims) memory, KiB.
    let shim_memory = |field: &str| -> u64 {
        let mut values: Vec<u64> = ids
            .iter()
            .map(|id| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", shim_pid(&f, id)))
                    .expect("shim status");
                status
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .expect("a memory field")
            })
            .collect();
        values.sort();
        values[values.len() / 2]
    };
    let (rss_kib, anon_kib) = (shim_memory("VmRSS:"), shim_memory("RssAnon:"));
    let du = |p: &Path| -> u64 {
        let out = std::process::Command::new("du")
            .args(["-sk", "-x"])
            .arg(p)
            .output()
            .expect("du");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let state_kib = du(&f
        .runtime
        .config()
        .state_root
        .join("containers")
        .join(&ids[0]));
    let upper_kib = du(&sandbox
        .pod_dir
        .join("containers")
        .join(&ids[0])
        .join("upper"));
    eprintln!(
        "FIGURES start_container→Running: p50 {:?} p90 {:?} max {:?}; shim RSS p50 {rss_kib} KiB \
         ({anon_kib} KiB private); per-container state dir {state_kib} KiB, writable layer \
         {upper_kib} KiB",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 9 / 10],
        latencies[latencies.len() - 1],
    );
    assert!(latencies[latencies.len() / 2] < Duration::from_secs(5));
    f.cleanup(&[&pod]).await;
}

/// A cgroup file of `rel` (relative to the hierarchy root) for `controller`, v1 or v2.
fn cgroup_file(controller: &str, rel: &str, v1: &str, v2: &str) -> String {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = if unified {
        Path::new("/sys/fs/cgroup").join(rel).join(v2)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(v1)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn pod_and_container_cgroups_get_their_limits() {
    let Some(f) = Fixture::new("limits") else {
        return;
    };
    let mut pod = f.pod("limits");
    pod.resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(100_000),
        cpu_period: Some(100_000),
        memory_limit: Some(256 * 1024 * 1024),
        pids_limit: Some(100),
    };
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let mut spec = f.container(
        &pod,
        "limited",
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; sleep 1000"],
    );
    spec.resources = Resources {
        cpu_shares: Some(256),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(64 * 1024 * 1024),
        pids_limit: Some(50),
    };
    f.runtime
        .start_container(&sandbox, &spec)
        .await
        .expect("start");
    let pod_cg = &sandbox.cgroup_path;
    let ctr_cg = format!("{pod_cg}/{}", spec.id);
    assert_eq!(
        cgroup_file("memory", pod_cg, "memory.limit_in_bytes", "memory.max"),
        (256 * 1024 * 1024).to_string()
    );
    assert_eq!(cgroup_file("pids", pod_cg, "pids.max", "pids.max"), "100");
    assert_eq!(
        cgroup_file("memory", &ctr_cg, "memory.limit_in_bytes", "memory.max"),
        (64 * 1024 * 1024).to_string()
    );
    assert_eq!(cgroup_file("pids", &ctr_cg, "pids.max", "pids.max"), "50");
    let quota = cgroup_file("cpu", &ctr_cg, "cpu.cfs_quota_us", "cpu.max");
    assert!(quota == "50000" || quota == "50000 100000", "{quota}");
    // The container sees its own limit through its read-only /sys/fs/cgroup.
    let seen = wait_for_log(&spec.log_path, "").await;
    assert!(
        seen.iter()
            .any(|l| l.ends_with(&(64 * 1024 * 1024).to_string())),
        "{seen:?}"
    );
    f.cleanup(&[&pod]).await;
}

/// The `CapEff`/`NoNewPrivs` lines a container's process sees.
async fn status_of(f: &Fixture, sandbox: &SandboxInfo, spec: &ContainerSpec) -> (u64, String) {
    assert_eq!(exit_code(&run_to_exit(f, sandbox, spec).await), 0);
    let lines = log_lines(&spec.log_path);
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| {
                l.split_once(&format!("{name}:\t"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{name} in {lines:?}"))
    };
    let caps = u64::from_str_radix(&field("CapEff"), 16).expect("hex caps");
    (caps, field("NoNewPrivs"))
}

#[tokio::test]
async fn capabilities_follow_the_default_set_privileged_and_drops() {
    let Some(f) = Fixture::new("caps") else {
        return;
    };
    let pod = f.pod("caps");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let argv = ["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/self/status"];
    let default = f.container(&pod, "default", &argv);
    // containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(
        status_of(&f, &sandbox, &default).await,
        (0xa80425fb, "0".into())
    );

    let mut dropped = f.container(&pod, "dropped", &argv);
    dropped.security.cap_drop = vec!["NET_RAW".into(), "CHOWN".into()];
    dropped.security.cap_add = vec!["NET_ADMIN".into()];
    dropped.security.no_new_privileges = true;
    let net_raw = 1 << 13;
    let chown = 1 << 0;
    let net_admin = 1 << 12;
    assert_eq!(
        status_of(&f, &sandbox, &dropped).await,
        ((0xa80425fb & !net_raw & !chown) | net_admin, "1".into())
    );

    let mut privileged = f.container(&pod, "privileged", &argv);
    privileged.security.privileged = true;
    let (caps, _) = status_of(&f, &sandbox, &privileged).await;
    // Every capability the runtime itself holds (its bounding set; capstan names up to
    // CHECKPOINT_RESTORE, 40).
    let bounding = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .expect("CapBnd");
    let expect = u64::from_str_radix(&bounding, 16).expect("hex") & ((1u64 << 41) - 1);
    assert_eq!(caps, expect, "{caps:x}");
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn a_host_network_pod_keeps_the_node_network_and_hostname() {
    let Some(f) = Fixture::new("hostnet") else {
        return;
    };
    let mut pod = f.pod("hostnet");
    pod.host_network = true;
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    assert!(sandbox.net_ns.is_none() && sandbox.uts_ns.is_none());
    let spec = f.container(
        &pod,
        "h",
        &[
            "sh",
            "-c",
            "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc",
        ],
    );
    assert_eq!(exit_code(&run_to_exit(&f, &sandbox, &spec).await), 0);
    let lines: Vec<String> = log_lines(&spec.log_path)
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let link = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .expect("ns link")
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(
        lines,
        vec![host_name.trim().to_string(), link("net"), lines[2].clone()]
    );
    assert_ne!(
        lines[2],
        link("ipc"),
        "the pod still has its own IPC namespace"
    );
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn exec_of_a_missing_command_says_so() {
    let Some(f) = Fixture::new("execmissing") else {
        return;
    };
    let pod = f.pod("execmissing");
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    let spec = f.container(&pod, "t", &["sleep", "1000"]);
    f.runtime
        .start_container(&sandbox, &spec)
        .await
        .expect("start");
    let out = f
        .runtime
        .exec(
            &spec.id,
            &["no-such-probe".to_string()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 126);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-probe"), "{stderr}");
    assert!(!out.timed_out);
    f.cleanup(&[&pod]).await;
}

#[tokio::test]
async fn containers_of_a_pod_sharing_its_pid_namespace_see_each_other() {
    let Some(f) = Fixture::new("sharepid") else {
        return;
    };
    let mut pod = f.pod("sharepid");
    pod.share_process_namespace = true;
    let sandbox = f.runtime.ensure_sandbox(&pod).await.expect("sandbox");
    assert!(sandbox.pid_ns.is_some());
    let sleeper = f.container(&pod, "sleeper", &["sleep", "1000"]);
    f.runtime
        .start_container(&sandbox, &sleeper)
        .await
        .expect("start");
    let looker = f.container(
        &pod,
        "looker",
        &[
            "sh",
            "-c",
            "pidof sleep >/dev/null && echo seen; cat /proc/1/cmdline | tr '\\0' ' '",
        ],
    );
    assert_eq!(exit_code(&run_to_exit(&f, &sandbox, &looker).await), 0);
    let lines: Vec<String> = log_lines(&looker.log_path)
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(lines.first().map(String::as_str), Some("seen"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("container-shim sandbox")),
        "{lines:?}"
    );
    // Not PID 1, the sleeper dies of SIGTERM at once.
    let began = Instant::now();
    let state = f
        .runtime
        .stop(&sleeper.id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(exit_code(&state), 128 + 15);
    f.cleanup(&[&pod]).await;
}
