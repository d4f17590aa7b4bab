//! The files a container's state dir holds, written by the agent (`container.json`) and by its
//! shim (`shim.json`, `started.json`, `exit.json`, `error.json`), each replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::layout::RootfsDirs;

pub const CONTAINER: &str = "container.json";
pub const SHIM: &str = "shim.json";
pub const STARTED: &str = "started.json";
pub const EXIT: &str = "exit.json";
pub const ERROR: &str = "error.json";
/// The OCI bundle's config (the container dir is the bundle).
pub const OCI_CONFIG: &str = "config.json";
/// The shim's own stderr.
pub const SHIM_LOG: &str = "shim.log";

/// What the shim needs to run a container, and what a restarted agent needs to know it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerFile {
    pub id: String,
    pub pod_uid: String,
    pub labels: BTreeMap<String, String>,
    pub libcontainer_root: PathBuf,
    pub libcontainer_id: String,
    /// Overlay lower dirs, bottom first.
    pub layers: Vec<PathBuf>,
    pub rootfs: RootfsDirs,
    pub read_only_rootfs: bool,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroup_path: String,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The container keeps a stdin open for attach (`stdin`), closed after the first attach
    /// session (`stdinOnce`); `tty` gives it a terminal. Absent in records of older agents.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
}

/// The detached shim's identity: its pid and start time (so a reused pid is not mistaken).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimFile {
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartedFile {
    pub pid: i32,
    pub started_at_ns: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitFile {
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at_ns: Option<u64>,
    pub finished_at_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorFile {
    pub reason: String,
}

/// The shim's one-line report to the agent that started it (on the shim's stdout).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum StartReport {
    Started(StartedFile),
    Failed(ErrorFile),
}

pub fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn from_ns(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Writes `value` as `dir/name` by renaming a complete temporary file over it, so a reader
/// (or a crash) never sees half a file.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads `dir/name`; Ok(None) when it does not exist.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> std::io::Result<Option<T>> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
