//! Containers without a container engine: each container is run by its own shim process
//! (`capstan container-shim`, single-threaded, detached from the agent) that drives youki's
//! libcontainer, copies the container's stdout/stderr into its rotating log file, waits for
//! the exit and records it on disk — so an agent restart neither kills nor loses containers.
//! A pod's sandbox is its shared namespaces (net, ipc, uts) pinned by bind mounts, and its
//! cgroup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::agent::AgentOptions;

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
}

impl Runtime {
    pub fn open(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        Ok(Runtime { config })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Creates (or finds, if it exists) the pod's sandbox.
    pub async fn ensure_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        let _ = spec;
        unimplemented!("runtime helper")
    }

    /// Removes the sandbox: namespaces, pod cgroup, pod dir (containers must be gone).
    pub async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let _ = pod_uid;
        unimplemented!("runtime helper")
    }

    /// Starts a shim that creates the container and runs it; returns once it runs (or failed
    /// to start: the error says why, e.g. executable not found).
    pub async fn start_container(
        &self,
        sandbox: &SandboxInfo,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        let _ = (sandbox, spec);
        unimplemented!("runtime helper")
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let _ = id;
        unimplemented!("runtime helper")
    }

    /// Waits until the container has exited (returns at once if it had).
    pub async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let _ = id;
        unimplemented!("runtime helper")
    }

    /// SIGTERM (or the image's stop signal), SIGKILL after `grace`; returns once exited.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuntimeError> {
        let _ = (id, grace);
        unimplemented!("runtime helper")
    }

    /// Removes an exited container's state and writable layer (its log file stays until the
    /// pod goes).
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let _ = id;
        unimplemented!("runtime helper")
    }

    /// Every container on disk, running or exited.
    pub async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        unimplemented!("runtime helper")
    }

    /// Runs a command in a running container (exec probes), killed after `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let _ = (id, argv, timeout);
        unimplemented!("runtime helper")
    }
}

/// The hidden `capstan container-shim` subcommand's entry (called before any tokio runtime
/// exists: the shim forks and must be single-threaded).
pub fn shim_main(args: Vec<String>) -> i32 {
    let _ = args;
    unimplemented!("runtime helper")
}
