//! Pod and container cgroups on either hierarchy: v2 (one tree at /sys/fs/cgroup) or v1
//! (one tree per controller, as on this hybrid VM). Creates pod cgroups with their limits,
//! lists and kills a cgroup's processes, reads OOM kills, removes cgroups.

use std::path::{Path, PathBuf};

use super::Resources;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy's mount point.
    V2(PathBuf),
    /// Every v1 hierarchy: its mount point and the controllers mounted there.
    V1(Vec<(PathBuf, Vec<String>)>),
}

impl Hierarchy {
    /// The hierarchy in use: v2 when /sys/fs/cgroup itself is cgroup2, else v1's.
    pub fn detect() -> std::io::Result<Hierarchy> {
        let st = nix::sys::statfs::statfs(CGROUP_ROOT).map_err(std::io::Error::from)?;
        if st.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC {
            return Ok(Hierarchy::V2(PathBuf::from(CGROUP_ROOT)));
        }
        let mut hierarchies = Vec::new();
        for m in crate::mountinfo::mounts()? {
            if m.fstype != "cgroup" {
                continue;
            }
            let controllers = m
                .options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                .map(str::to_string)
                .collect();
            hierarchies.push((m.point, controllers));
        }
        Ok(Hierarchy::V1(hierarchies))
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2(_))
    }

    /// Every directory the cgroup `rel` has (one per v1 hierarchy).
    pub fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self {
            Hierarchy::V2(root) => vec![root.join(rel)],
            Hierarchy::V1(all) => all.iter().map(|(m, _)| m.join(rel)).collect(),
        }
    }

    /// The directory of `rel` in the hierarchy holding `controller`.
    fn controller_dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self {
            Hierarchy::V2(root) => Some(root.join(rel)),
            Hierarchy::V1(all) => all
                .iter()
                .find(|(_, c)| c.iter().any(|c| c == controller))
                .map(|(m, _)| m.join(rel)),
        }
    }

    /// Creates the cgroup `rel` (and its parents) and applies `limits`.
    pub fn create(&self, rel: &str, limits: &Resources) -> std::io::Result<()> {
        match self {
            Hierarchy::V2(root) => {
                // Each level must delegate the controllers to the next one down.
                let mut dir = root.clone();
                for part in rel.trim_start_matches('/').split('/') {
                    enable_v2_controllers(&dir);
                    dir.push(part);
                    create_dir(&dir)?;
                }
                let write = |file: &str, value: String| write_file(&dir.join(file), &value);
                if let Some(shares) = limits.cpu_shares {
                    write("cpu.weight", shares_to_weight(shares).to_string())?;
                }
                if let Some(quota) = limits.cpu_quota.filter(|q| *q > 0) {
                    let period = limits.cpu_period.unwrap_or(100_000);
                    write("cpu.max", format!("{quota} {period}"))?;
                }
                if let Some(limit) = limits.memory_limit.filter(|m| *m > 0) {
                    write("memory.max", limit.to_string())?;
                }
                if let Some(pids) = limits.pids_limit.filter(|p| *p > 0) {
                    write("pids.max", pids.to_string())?;
                }
            }
            Hierarchy::V1(_) => {
                for (controller, file, value) in [
                    (
                        "cpu",
                        "cpu.shares",
                        limits.cpu_shares.map(|s| s.to_string()),
                    ),
                    (
                        "cpu",
                        "cpu.cfs_period_us",
                        limits
                            .cpu_quota
                            .filter(|q| *q > 0)
                            .map(|_| limits.cpu_period.unwrap_or(100_000).to_string()),
                    ),
                    (
                        "cpu",
                        "cpu.cfs_quota_us",
                        limits.cpu_quota.filter(|q| *q > 0).map(|q| q.to_string()),
                    ),
                    (
                        "memory",
                        "memory.limit_in_bytes",
                        limits
                            .memory_limit
                            .filter(|m| *m > 0)
                            .map(|m| m.to_string()),
                    ),
                    (
                        "pids",
                        "pids.max",
                        limits.pids_limit.filter(|p| *p > 0).map(|p| p.to_string()),
                    ),
                    ("cpuacct", "", None),
                ] {
                    let Some(dir) = self.controller_dir(controller, rel) else {
                        continue;
                    };
                    create_dir(&dir)?;
                    if let Some(value) = value {
                        write_file(&dir.join(file), &value)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The processes in the cgroup `rel` (empty when it does not exist).
    pub fn procs(&self, rel: &str) -> Vec<i32> {
        let dir = self
            .controller_dir("pids", rel)
            .or_else(|| self.controller_dir("memory", rel));
        let Some(dir) = dir else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the cgroup `rel`.
    pub fn kill_all(&self, rel: &str) {
        for pid in self.procs(rel) {
            if let Err(e) = super::process::signal(pid, nix::sys::signal::Signal::SIGKILL) {
                tracing::warn!(pid, cgroup = rel, error = %e, "killing a container process");
            }
        }
    }

    /// How many processes the OOM killer ended in the cgroup `rel`.
    pub fn oom_kills(&self, rel: &str) -> u64 {
        let (file, key) = match self {
            Hierarchy::V2(_) => ("memory.events", "oom_kill"),
            Hierarchy::V1(_) => ("memory.oom_control", "oom_kill"),
        };
        let Some(dir) = self.controller_dir("memory", rel) else {
            return 0;
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Removes the cgroup `rel` and any cgroups below it, in every hierarchy.
    pub fn remove(&self, rel: &str) -> std::io::Result<()> {
        for dir in self.dirs(rel) {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

fn enable_v2_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["cpu", "memory", "pids", "io"] {
        if available.split_whitespace().any(|c| c == controller) {
            // Fails harmlessly where the controller is already on or cannot be delegated.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
    }
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_context(e, dir))
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value).map_err(|e| io_context(e, path))
}

fn io_context(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// cgroup dirs go with rmdir (their files cannot be deleted), children first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_context(e, dir)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_context(e, dir)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
