//! Containers without a container engine: each container is run by its own shim process
//! (`capstan container-shim`, single-threaded, detached from the agent) that drives youki's
//! libcontainer, copies the container's stdout/stderr into its rotating log file, waits for
//! the exit and records it on disk — so an agent restart neither kills nor loses containers.
//! A pod's sandbox is its shared namespaces (net, ipc, uts) pinned by bind mounts, and its
//! cgroup.

pub mod attach;
mod cgroups;
mod exec;
mod executor;
mod layout;
mod oci;
mod process;
mod record;
mod rootfs;
mod sandbox;
mod seccomp;
mod shim;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;

use crate::agent::AgentOptions;
use cgroups::Hierarchy;
use layout::{libcontainer_id, Layout};
use record::{ContainerFile, ErrorFile, ExitFile, ShimFile, StartReport, StartedFile};

/// Where the runtime keeps state and how it names host resources.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Container and sandbox state (short: unix socket paths live below it).
    pub state_root: PathBuf,
    /// Writable layers, per-container rootfs mounts, pod dirs (`<agent root>/pods`).
    pub pods_root: PathBuf,
    /// The cgroup all pods live under (`capstan-<instance>`; `kubepods` upstream).
    pub cgroup_parent: String,
    /// The binary run as the shim (the running capstan: `/proc/self/exe` resolved).
    pub shim_binary: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

impl RuntimeConfig {
    pub fn for_agent(opts: &AgentOptions) -> RuntimeConfig {
        RuntimeConfig {
            state_root: PathBuf::from("/run/capstan").join(&opts.instance),
            pods_root: opts.root.join("pods"),
            cgroup_parent: format!("capstan-{}", opts.instance),
            shim_binary: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            log_max_size: opts.container_log_max_size,
            log_max_files: opts.container_log_max_files,
        }
    }
}

/// A pod's sandbox: what its containers share.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod's hostname (UTS namespace).
    pub hostname: String,
    /// `hostNetwork: true`: no network namespace of its own.
    pub host_network: bool,
    /// `shareProcessNamespace: true`: one PID namespace for all its containers.
    pub share_process_namespace: bool,
    /// Pod-level cgroup limits (sum of containers'), by QoS class.
    pub resources: Resources,
    pub qos: QosClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    #[default]
    BestEffort,
}

/// Cgroup limits from `resources` (upstream's conversions: shares = milliCPU*1024/1000 with
/// a minimum of 2, quota = milliCPU*period/1000 with period 100ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// What the sandbox gives its containers.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Namespace files to join (`/proc/…/ns/net`-like bind mounts); None for host ones.
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    pub pid_ns: Option<PathBuf>,
    /// The pod cgroup (relative to each hierarchy's root).
    pub cgroup_path: String,
    /// The pod's own directory (volumes, container writable layers).
    pub pod_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// `bind` for volumes; `tmpfs` for memory-backed emptyDir with an optional size.
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Tmpfs { size_bytes: Option<u64> },
}

/// Process identity and privileges (from `securityContext`, resolved by the pod worker).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    /// Capability names without `CAP_` (`NET_ADMIN`), applied to the runtime default set.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    /// `seccompProfile: RuntimeDefault`.
    pub seccomp_runtime_default: bool,
}

/// One container to create (not yet started) in a sandbox.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Unique on this node: `<pod uid>-<container name>-<attempt>`, shortened as needed.
    pub id: String,
    pub pod_uid: String,
    pub container_name: String,
    /// 0 for the first run, +1 per restart.
    pub attempt: u32,
    /// Overlay lower dirs, bottom first (from `ImageStore::layers`).
    pub layers: Vec<PathBuf>,
    /// The full argv (entrypoint/command + args already resolved).
    pub argv: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub working_dir: String,
    pub security: Security,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub hostname: String,
    /// The CRI-format log file the shim writes (rotated beside itself).
    pub log_path: PathBuf,
    /// Kept with the container so a restarted agent can tell what it is.
    pub labels: BTreeMap<String, String>,
    /// `stdin`, `stdinOnce`, `tty` of the container's spec (what attach can reach).
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// A process namespace to join instead of the pod's (an ephemeral container's target's).
    pub pid_ns: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running {
        pid: u32,
        started_at: SystemTime,
    },
    Exited {
        exit_code: i32,
        /// Set when the cgroup's OOM killer ended it.
        oom_killed: bool,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
    },
}

/// A container found on disk (for recovery after an agent restart).
#[derive(Debug, Clone)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("creating container {id}: {reason}")]
    Create { id: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// The runtime (cheap to share behind an `Arc`).
pub struct Runtime {
    config: RuntimeConfig,
    layout: Layout,
    cgroups: Hierarchy,
}

/// How long the agent waits for a shim to report that its container started.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The exit code recorded when a container never started (containerd's StartError).
const START_ERROR_EXIT: i32 = 128;
/// The exit code recorded when the shim died without recording the container's.
const SHIM_DIED_EXIT: i32 = 255;

impl Runtime {
    pub fn open(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let layout = Layout {
            state_root: config.state_root.clone(),
            pods_root: config.pods_root.clone(),
        };
        for dir in [layout.containers_dir(), layout.libcontainer_root()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        }
        let cgroups =
            Hierarchy::detect().map_err(|e| io_err("detecting the cgroup hierarchy", e))?;
        tracing::info!(state_root = %config.state_root.display(), cgroup_v2 = cgroups.is_v2(), "container runtime open");
        Ok(Runtime {
            config,
            layout,
            cgroups,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The pod's cgroup, relative to each hierarchy's root.
    pub fn pod_cgroup(&self, pod_uid: &str) -> String {
        format!("{}/pod{pod_uid}", self.config.cgroup_parent)
    }

    /// Creates (or finds, if it exists) the pod's sandbox.
    pub async fn ensure_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        check_name("pod uid", &spec.pod_uid)?;
        let dir = self.layout.sandbox_dir(&spec.pod_uid);
        let own_network = !spec.host_network;
        let mut kinds = vec![sandbox::IPC];
        if own_network {
            kinds.extend([sandbox::NET, sandbox::UTS]);
        }
        let share_pid = spec.share_process_namespace;
        if share_pid {
            kinds.push(sandbox::PID);
        }
        let pinned = rootfs::mounts_under(&dir);
        let complete = kinds.iter().all(|k| pinned.contains(&dir.join(k)));
        if !complete {
            // A half-made sandbox (an agent crash mid-way) is made again from scratch.
            kill_pause(&dir).await;
            rootfs::unmount_all_under(&dir).map_err(|e| io_err("unmounting a stale sandbox", e))?;
            remove_dir_if_exists(&dir)?;
            let output = tokio::process::Command::new(&self.config.shim_binary)
                .arg("container-shim")
                .arg("sandbox")
                .arg(&dir)
                .arg(&spec.hostname)
                .arg(if own_network { "own" } else { "host" })
                .arg(if share_pid { "pid" } else { "nopid" })
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| io_err(format!("running {}", self.config.shim_binary.display()), e))?;
            if !output.status.success() {
                return Err(RuntimeError::Other(format!(
                    "making the sandbox of pod {}: {}",
                    spec.pod_uid,
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        let cgroup_path = self.pod_cgroup(&spec.pod_uid);
        self.cgroups
            .create(&cgroup_path, &spec.resources)
            .map_err(|e| io_err(format!("creating cgroup {cgroup_path}"), e))?;
        let pod_dir = self.layout.pod_dir(&spec.pod_uid);
        std::fs::create_dir_all(&pod_dir)
            .map_err(|e| io_err(format!("creating {}", pod_dir.display()), e))?;
        tracing::debug!(pod_uid = %spec.pod_uid, made = !complete, "sandbox ready");
        Ok(SandboxInfo {
            net_ns: own_network.then(|| dir.join(sandbox::NET)),
            ipc_ns: Some(dir.join(sandbox::IPC)),
            uts_ns: own_network.then(|| dir.join(sandbox::UTS)),
            pid_ns: share_pid.then(|| dir.join(sandbox::PID)),
            cgroup_path,
            pod_dir,
        })
    }

    /// Removes the sandbox: namespaces, pod cgroup, pod dir (containers must be gone).
    pub async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        check_name("pod uid", pod_uid)?;
        let dir = self.layout.sandbox_dir(pod_uid);
        kill_pause(&dir).await;
        rootfs::unmount_all_under(&dir).map_err(|e| io_err("unmounting sandbox namespaces", e))?;
        remove_dir_if_exists(&dir)?;
        let cgroup = self.pod_cgroup(pod_uid);
        self.cgroups
            .remove(&cgroup)
            .map_err(|e| io_err(format!("removing cgroup {cgroup}"), e))?;
        let pod_dir = self.layout.pod_dir(pod_uid);
        // Nothing may stay mounted below the pod dir before it is deleted recursively.
        rootfs::unmount_all_under(&pod_dir)
            .map_err(|e| io_err("unmounting below the pod dir", e))?;
        remove_dir_if_exists(&pod_dir)?;
        tracing::debug!(pod_uid, "sandbox removed");
        Ok(())
    }

    /// Stops and removes every container and sandbox this runtime has on the host, then its
    /// cgroup parent, mounts and state dir (`capstan cleanup`, as k3s-killall.sh): nothing
    /// is left running or mounted. Returns what it removed, for the operator.
    pub async fn remove_everything(&self) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        if self.layout.containers_dir().is_dir() {
            for record in self.list().await? {
                // No grace: the operator asked for everything to stop now.
                if let Err(e) = self.stop(&record.id, Duration::ZERO).await {
                    tracing::warn!(id = %record.id, error = %e, "stopping a container");
                }
                match self.remove(&record.id).await {
                    Ok(()) => removed.push(format!("container {}", record.id)),
                    Err(e) => tracing::warn!(id = %record.id, error = %e, "removing a container"),
                }
            }
        }
        let sandboxes = self.config.state_root.join("sandboxes");
        if let Ok(entries) = std::fs::read_dir(&sandboxes) {
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                self.remove_sandbox(&uid).await?;
                removed.push(format!("sandbox {uid}"));
            }
        }
        // Whatever a crash left: processes in the pod cgroups, mounts below both roots.
        for rel in self.cgroup_tree(&self.config.cgroup_parent) {
            self.cgroups.kill_all(&rel);
        }
        if self
            .cgroups
            .dirs(&self.config.cgroup_parent)
            .iter()
            .any(|d| d.exists())
        {
            self.remove_cgroup_parent()?;
            removed.push(format!("cgroup {}", self.config.cgroup_parent));
        }
        for root in [&self.config.state_root, &self.config.pods_root] {
            for mount in rootfs::mounts_under(root) {
                removed.push(format!("mount {}", mount.display()));
            }
            rootfs::unmount_all_under(root)
                .map_err(|e| io_err(format!("unmounting below {}", root.display()), e))?;
        }
        if self.config.state_root.exists() {
            remove_dir_if_exists(&self.config.state_root)?;
            removed.push(format!("dir {}", self.config.state_root.display()));
        }
        Ok(removed)
    }

    /// `rel` and the cgroups below it (in the first hierarchy that has it), deepest first.
    fn cgroup_tree(&self, rel: &str) -> Vec<String> {
        let Some(root) = self.cgroups.dirs(rel).into_iter().find(|d| d.is_dir()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut stack = vec![(root, rel.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let name = e.file_name().to_string_lossy().into_owned();
                        stack.push((e.path(), format!("{rel}/{name}")));
                    }
                }
            }
            found.push(rel);
        }
        found.reverse();
        found
    }

    /// Removes the cgroup all pods live under (once every sandbox is gone: at shutdown, in
    /// tests).
    pub fn remove_cgroup_parent(&self) -> Result<(), RuntimeError> {
        self.cgroups
            .remove(&self.config.cgroup_parent)
            .map_err(|e| io_err(format!("removing cgroup {}", self.config.cgroup_parent), e))
    }

    /// Starts a shim that creates the container and runs it; returns once it runs (or failed
    /// to start: the error says why, e.g. executable not found).
    pub async fn start_container(
        &self,
        sandbox: &SandboxInfo,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        check_name("container id", &spec.id)?;
        check_name("pod uid", &spec.pod_uid)?;
        if spec.security.seccomp_runtime_default && !spec.security.privileged {
            // Built here too, so a filter that cannot be made fails the start with a reason
            // instead of an opaque error from inside the container's init.
            seccomp::programs(&[]).map_err(|e| RuntimeError::Other(e.to_string()))?;
        }
        let dir = self.layout.container_dir(&spec.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Create {
                    id: spec.id.clone(),
                    reason: "a container with this id exists".to_string(),
                })
            }
            Err(e) => return Err(io_err(format!("creating {}", dir.display()), e)),
        }
        let cgroup_path = format!("/{}/{}", sandbox.cgroup_path.trim_matches('/'), spec.id);
        let file = ContainerFile {
            id: spec.id.clone(),
            pod_uid: spec.pod_uid.clone(),
            labels: spec.labels.clone(),
            libcontainer_root: self.layout.libcontainer_root(),
            libcontainer_id: libcontainer_id(&spec.id),
            layers: spec.layers.clone(),
            rootfs: self.layout.rootfs_dirs(&spec.pod_uid, &spec.id),
            read_only_rootfs: spec.security.read_only_rootfs,
            cgroup_path: cgroup_path.clone(),
            log_path: spec.log_path.clone(),
            log_max_size: self.config.log_max_size,
            log_max_files: self.config.log_max_files,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            tty: spec.tty,
        };
        let oci_config = oci::config(
            spec,
            sandbox,
            &file.rootfs.merged,
            &cgroup_path,
            self.cgroups.is_v2(),
        );
        record::write(&dir, record::OCI_CONFIG, &oci_config)
            .map_err(|e| io_err("writing config.json", e))?;
        record::write(&dir, record::CONTAINER, &file)
            .map_err(|e| io_err("writing container.json", e))?;
        if let Some(log_dir) = spec.log_path.parent() {
            std::fs::create_dir_all(log_dir)
                .map_err(|e| io_err(format!("creating {}", log_dir.display()), e))?;
        }
        let shim_log = std::fs::File::create(dir.join(record::SHIM_LOG))
            .map_err(|e| io_err("creating shim.log", e))?;
        let mut child = tokio::process::Command::new(&self.config.shim_binary)
            .arg("container-shim")
            .arg("run")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|e| io_err(format!("running {}", self.config.shim_binary.display()), e))?;
        let mut report = Vec::new();
        let read = async {
            if let Some(mut out) = child.stdout.take() {
                out.read_to_end(&mut report).await?;
            }
            child.wait().await
        };
        match tokio::time::timeout(START_TIMEOUT, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(io_err("waiting for the shim's report", e)),
            Err(_) => {
                return Err(RuntimeError::Create {
                    id: spec.id.clone(),
                    reason: format!("no report from the shim within {START_TIMEOUT:?}"),
                })
            }
        }
        match serde_json::from_slice::<StartReport>(report.trim_ascii()) {
            Ok(StartReport::Started(started)) => {
                tracing::debug!(id = %spec.id, pid = started.pid, "container started");
                Ok(())
            }
            Ok(StartReport::Failed(error)) => Err(RuntimeError::Create {
                id: spec.id.clone(),
                reason: error.reason,
            }),
            Err(_) => {
                let log = std::fs::read_to_string(dir.join(record::SHIM_LOG)).unwrap_or_default();
                Err(RuntimeError::Create {
                    id: spec.id.clone(),
                    reason: format!("the shim ended without a report: {}", log.trim()),
                })
            }
        }
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        check_name("container id", id)?;
        let dir = self.layout.container_dir(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        read_state(&dir)
    }

    /// Waits until the container has exited (returns at once if it had) and its shim has
    /// finished cleaning up after it.
    pub async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        loop {
            let state = self.state(id).await?;
            let dir = self.layout.container_dir(id);
            let shim: Option<ShimFile> =
                record::read(&dir, record::SHIM).map_err(|e| io_err("reading shim.json", e))?;
            match shim {
                // The shim exits right after recording the exit and deleting the container.
                Some(shim) if process::is_alive(shim.pid, shim.start_ticks) => {
                    process::wait_exit(shim.pid, shim.start_ticks)
                        .await
                        .map_err(|e| io_err(format!("waiting for the shim of {id}"), e))?;
                }
                _ if matches!(state, ContainerState::Exited { .. }) => return Ok(state),
                _ => {
                    return Err(RuntimeError::Other(format!(
                        "container {id} has no shim (is it being started?)"
                    )))
                }
            }
        }
    }

    /// SIGTERM (or the image's stop signal), SIGKILL after `grace`; returns once exited.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuntimeError> {
        let state = self.state(id).await?;
        let pid = match state {
            ContainerState::Exited { .. } => return Ok(state),
            ContainerState::Running { pid, .. } => Some(pid as i32),
            ContainerState::Created => None,
        };
        if let Some(pid) = pid {
            process::signal(pid, Signal::SIGTERM)
                .map_err(|e| io_err(format!("signalling {id}"), e))?;
            if let Ok(state) = tokio::time::timeout(grace, self.wait(id)).await {
                return state;
            }
            tracing::info!(
                id,
                ?grace,
                "container outlived its grace period: killing it"
            );
            process::signal(pid, Signal::SIGKILL)
                .map_err(|e| io_err(format!("killing {id}"), e))?;
        }
        let file = self.container_file(id)?;
        self.cgroups.kill_all(&file.cgroup_path);
        if pid.is_none() && !self.has_live_shim(id)? {
            // Never started (the agent stopped before spawning its shim): nothing runs.
            return Ok(state);
        }
        self.wait(id).await
    }

    /// Whether the container's shim process still runs.
    fn has_live_shim(&self, id: &str) -> Result<bool, RuntimeError> {
        let shim: Option<ShimFile> = record::read(&self.layout.container_dir(id), record::SHIM)
            .map_err(|e| io_err("reading shim.json", e))?;
        Ok(shim.is_some_and(|s| process::is_alive(s.pid, s.start_ticks)))
    }

    /// Removes an exited container's state and writable layer (its log file stays until the
    /// pod goes).
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let state = self.state(id).await?;
        let never_started = state == ContainerState::Created && !self.has_live_shim(id)?;
        if !matches!(state, ContainerState::Exited { .. }) && !never_started {
            return Err(RuntimeError::Other(format!(
                "container {id} is still running: stop it first"
            )));
        }
        // An exited container's shim may still be deleting it: let it finish.
        if tokio::time::timeout(Duration::from_secs(10), self.wait(id))
            .await
            .is_err()
        {
            tracing::warn!(id, "the shim is slow to finish: removing anyway");
        }
        let file = self.container_file(id)?;
        // Left behind only when the shim died: kill what remains and delete it here.
        if file.libcontainer_root.join(&file.libcontainer_id).exists() {
            self.cgroups.kill_all(&file.cgroup_path);
            let f = file.clone();
            tokio::task::spawn_blocking(move || shim::delete_container(&f))
                .await
                .map_err(|e| RuntimeError::Other(format!("deleting {id}: {e}")))?;
        }
        if let Err(e) = self.cgroups.remove(&file.cgroup_path) {
            tracing::warn!(id, error = %e, "removing the container cgroup");
        }
        rootfs::unmount_all_under(&file.rootfs.base)
            .map_err(|e| io_err("unmounting the rootfs", e))?;
        remove_dir_if_exists(&file.rootfs.base)?;
        remove_dir_if_exists(&self.layout.container_dir(id))?;
        tracing::debug!(id, "container removed");
        Ok(())
    }

    /// Every container on disk, running or exited.
    pub async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let dir = self.layout.containers_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| io_err(format!("reading {}", dir.display()), e))?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let file = match self.container_file(&name) {
                Ok(f) => f,
                Err(e) => {
                    // container.json is written before the shim starts: a dir without it
                    // is an agent crash mid-start.
                    tracing::warn!(dir = %entry.path().display(), error = %e, "skipping a container dir");
                    continue;
                }
            };
            let state = match read_state(&entry.path()) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(id = %file.id, error = %e, "skipping a container with unreadable state");
                    continue;
                }
            };
            records.push(ContainerRecord {
                id: file.id,
                pod_uid: file.pod_uid,
                labels: file.labels,
                state,
            });
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Runs a command in a running container (exec probes), killed after `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::Other("exec: empty command".to_string()));
        }
        let state = self.state(id).await?;
        if !matches!(state, ContainerState::Running { .. }) {
            return Err(RuntimeError::Other(format!(
                "exec in {id}: the container is not running"
            )));
        }
        let file = self.container_file(id)?;
        let began = std::time::Instant::now();
        let child = tokio::process::Command::new(&self.config.shim_binary)
            .arg("container-shim")
            .arg("exec")
            .arg(&file.libcontainer_root)
            .arg(&file.libcontainer_id)
            .arg(timeout.as_millis().to_string())
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io_err(format!("running {}", self.config.shim_binary.display()), e))?;
        // The exec shim enforces the timeout itself; this one only guards against it hanging.
        let output =
            match tokio::time::timeout(timeout + Duration::from_secs(10), child.wait_with_output())
                .await
            {
                Ok(out) => out.map_err(|e| io_err("running the exec shim", e))?,
                Err(_) => {
                    return Ok(ExecOutput {
                        exit_code: exec::TIMED_OUT,
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                        timed_out: true,
                    })
                }
            };
        let exit_code = match (output.status.code(), output.status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => SHIM_DIED_EXIT,
        };
        Ok(ExecOutput {
            exit_code,
            timed_out: exit_code == exec::TIMED_OUT && began.elapsed() >= timeout,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    /// The pod's network namespace file; None for a pod on the host network (or one whose
    /// sandbox is gone).
    pub fn pod_netns(&self, pod_uid: &str) -> Option<PathBuf> {
        if !layout::valid_name(pod_uid) {
            return None;
        }
        let path = self.layout.sandbox_dir(pod_uid).join(sandbox::NET);
        path.exists().then_some(path)
    }

    /// Starts `argv` in a running container with the given stdio (pipes, or a pty's slave)
    /// and no time limit: the exec shim's exit code is the process's.
    /// The running container's init pid and its cgroup (relative to each hierarchy's root),
    /// for work in its namespaces by path (`/proc/<pid>/root/…`): the cgroup lets the caller
    /// check afterwards that the pid was not reused by another process meanwhile.
    pub async fn running_init(&self, id: &str) -> Option<(u32, String)> {
        match self.state(id).await {
            Ok(ContainerState::Running { pid, .. }) => {
                let file = self.container_file(id).ok()?;
                Some((pid, file.cgroup_path))
            }
            _ => None,
        }
    }

    pub async fn exec_stream(
        &self,
        id: &str,
        argv: &[String],
        (stdin, stdout, stderr): (Stdio, Stdio, Stdio),
    ) -> Result<tokio::process::Child, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::Other("exec: empty command".to_string()));
        }
        let file = self.container_file(id)?;
        tokio::process::Command::new(&self.config.shim_binary)
            .arg("container-shim")
            .arg("exec")
            .arg(&file.libcontainer_root)
            .arg(&file.libcontainer_id)
            .arg(exec::NO_TIMEOUT)
            .args(argv)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io_err(format!("running {}", self.config.shim_binary.display()), e))
    }

    /// A connection to the running container's own stdio, through its shim's attach socket
    /// (the frames of `attach`).
    pub async fn attach(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError> {
        use std::os::fd::AsFd;
        check_name("container id", id)?;
        let dir = self.layout.container_dir(id);
        let dir_fd = std::fs::File::open(&dir)
            .map_err(|e| io_err(format!("opening {}", dir.display()), e))?;
        let path = attach::short_path(dir_fd.as_fd(), attach::SOCKET);
        // A unix connect does not block: the shim's backlog takes it at once, or it fails.
        let stream = std::os::unix::net::UnixStream::connect(&path)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| {
                io_err(
                    format!("connecting to {}", dir.join(attach::SOCKET).display()),
                    e,
                )
            })?;
        tokio::net::UnixStream::from_std(stream).map_err(|e| io_err("attach socket", e))
    }

    fn container_file(&self, id: &str) -> Result<ContainerFile, RuntimeError> {
        let dir = self.layout.container_dir(id);
        match record::read(&dir, record::CONTAINER) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(RuntimeError::NotFound(id.to_string())),
            Err(e) => Err(io_err(
                format!("reading {}", dir.join(record::CONTAINER).display()),
                e,
            )),
        }
    }
}

/// The state the files in a container dir record.
fn read_state(dir: &Path) -> Result<ContainerState, RuntimeError> {
    let read_exit = || -> Result<Option<ContainerState>, RuntimeError> {
        let exit: Option<ExitFile> =
            record::read(dir, record::EXIT).map_err(|e| io_err("reading exit.json", e))?;
        Ok(exit.map(|e| ContainerState::Exited {
            exit_code: e.exit_code,
            oom_killed: e.oom_killed,
            started_at: e.started_at_ns.map(record::from_ns),
            finished_at: record::from_ns(e.finished_at_ns),
        }))
    };
    if let Some(state) = read_exit()? {
        return Ok(state);
    }
    let error: Option<ErrorFile> =
        record::read(dir, record::ERROR).map_err(|e| io_err("reading error.json", e))?;
    if error.is_some() {
        let finished_at = std::fs::metadata(dir.join(record::ERROR))
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        return Ok(ContainerState::Exited {
            exit_code: START_ERROR_EXIT,
            oom_killed: false,
            started_at: None,
            finished_at,
        });
    }
    let shim: Option<ShimFile> =
        record::read(dir, record::SHIM).map_err(|e| io_err("reading shim.json", e))?;
    let started: Option<StartedFile> =
        record::read(dir, record::STARTED).map_err(|e| io_err("reading started.json", e))?;
    let shim_alive = shim.is_some_and(|s| process::is_alive(s.pid, s.start_ticks));
    if shim_alive {
        return Ok(match started {
            Some(s) => ContainerState::Running {
                pid: s.pid as u32,
                started_at: record::from_ns(s.started_at_ns),
            },
            None => ContainerState::Created,
        });
    }
    if shim.is_none() {
        return Ok(ContainerState::Created);
    }
    // The shim may have recorded the exit between the first read and now.
    if let Some(state) = read_exit()? {
        return Ok(state);
    }
    tracing::warn!(dir = %dir.display(), "the container's shim died without recording an exit");
    Ok(ContainerState::Exited {
        exit_code: SHIM_DIED_EXIT,
        oom_killed: false,
        started_at: started.map(|s| record::from_ns(s.started_at_ns)),
        finished_at: SystemTime::now(),
    })
}

/// SIGKILLs the sandbox's shared-PID-namespace init, if it has one (ending every process
/// left in that namespace).
/// Kills a sandbox's pause process and waits (bounded) until it is gone: a removed sandbox
/// leaves nothing running, as upstream's StopPodSandbox (SIGKILL is delivered
/// asynchronously; on a loaded host the process was still there when removal returned).
async fn kill_pause(dir: &Path) {
    match record::read::<ShimFile>(dir, sandbox::PAUSE) {
        Ok(Some(p)) if process::is_alive(p.pid, p.start_ticks) => {
            if let Err(e) = process::signal(p.pid, Signal::SIGKILL) {
                tracing::warn!(pid = p.pid, error = %e, "killing a sandbox's pause process");
                return;
            }
            let gone = process::wait_exit(p.pid, p.start_ticks);
            match tokio::time::timeout(PAUSE_EXIT_WAIT, gone).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(pid = p.pid, error = %e, "waiting for a pause process to exit")
                }
                Err(_) => tracing::warn!(pid = p.pid, "a killed pause process has not exited"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "reading pause.json"),
    }
}

/// How long sandbox removal waits for a killed pause process to exit.
const PAUSE_EXIT_WAIT: Duration = Duration::from_secs(10);

fn check_name(what: &str, name: &str) -> Result<(), RuntimeError> {
    if layout::valid_name(name) {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!("invalid {what} {name:?}")))
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

fn io_err(context: impl Into<String>, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        context: context.into(),
        source,
    }
}

/// The hidden `capstan container-shim` subcommand's entry (called before any tokio runtime
/// exists: the shim forks and must be single-threaded).
pub fn shim_main(args: Vec<String>) -> i32 {
    let usage = || {
        eprintln!(
            "usage: capstan container-shim run <container dir> | exec <libcontainer root> <id> <timeout ms> <argv…> | sandbox <dir> <hostname> <own|host> <pid|nopid>"
        );
        2
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["run", dir] => shim::run(Path::new(dir)),
        ["exec", root, id, timeout_ms, argv @ ..] if !argv.is_empty() => {
            let Ok(ms) = timeout_ms.parse::<u64>() else {
                return usage();
            };
            exec::main(
                Path::new(root),
                id,
                (ms > 0).then(|| Duration::from_millis(ms)),
                argv.iter().map(|s| s.to_string()).collect(),
            )
        }
        ["sandbox", dir, hostname, network, pid] => {
            sandbox::main(Path::new(dir), hostname, *network == "own", *pid == "pid")
        }
        _ => usage(),
    }
}
