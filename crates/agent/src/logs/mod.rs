//! Container log files as the kubelet keeps them: CRI-format lines
//! (`<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`) in
//! `<pods root>/<pod uid>/logs/<container>/<attempt>.log`, rotated by size (`.log.1` the
//! newest rotated file, `.log.2` older, …).
//! `format` is the line codec; `writer` appends with rotation (the shim's side); `reader`
//! answers `pods/log` options (the kubelet endpoint's side).

pub mod format;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

/// The log file of one run (`attempt`) of a container.
pub fn container_log_path(
    pods_root: &Path,
    pod_uid: &str,
    container: &str,
    attempt: u32,
) -> PathBuf {
    container_log_dir(pods_root, pod_uid, container).join(format!("{attempt}.log"))
}

/// The folder holding every run's log of a container.
pub fn container_log_dir(pods_root: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pods_root.join(pod_uid).join("logs").join(container)
}

/// The `k`-th rotated file of a run's log (`k` ≥ 1; 1 is the most recent): rotation renames
/// `.log.k` to `.log.k+1` and `.log` to `.log.1`.
pub fn rotated_log_path(log_path: &Path, k: u32) -> PathBuf {
    let mut name = log_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{k}"));
    log_path.with_file_name(name)
}

/// Written (empty) by the shim beside a run's log file after its last line, once the
/// container has exited: a follower of the log stops when it sees it.
pub fn exited_marker_path(log_path: &Path) -> PathBuf {
    let mut name = log_path.file_name().unwrap_or_default().to_os_string();
    name.push(".exited");
    log_path.with_file_name(name)
}
