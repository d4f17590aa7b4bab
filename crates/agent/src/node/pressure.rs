//! The node's conditions computed from the host each status period, with the kubelet's
//! default hard eviction thresholds: memory, the agent root's disk and inodes, process ids.

use std::path::Path;

use super::host::{filesystem_stats, meminfo_kib, EVICTION_MEMORY_BYTES};
use crate::node_heartbeat::Condition;

/// `nodefs.available<10%`.
const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
/// `nodefs.inodesFree<5%`.
const INODES_FREE_MIN_PERCENT: u64 = 5;
/// PIDPressure when more than this share of the allowed ids is taken.
const PID_USED_MAX_PERCENT: u64 = 90;

/// A snapshot of what the host has left.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pids: bool,
}

impl Pressure {
    pub fn read(agent_root: &Path) -> Pressure {
        let memory = meminfo_kib("MemAvailable")
            .is_some_and(|kib| kib.saturating_mul(1024) < EVICTION_MEMORY_BYTES);
        let disk = filesystem_stats(agent_root).is_some_and(|fs| {
            below_percent(
                fs.available_bytes,
                fs.total_bytes,
                DISK_AVAILABLE_MIN_PERCENT,
            ) || below_percent(fs.free_inodes, fs.total_inodes, INODES_FREE_MIN_PERCENT)
        });
        let pids = pid_usage().is_some_and(|(used, limit)| {
            used.saturating_mul(100) > limit.saturating_mul(PID_USED_MAX_PERCENT)
        });
        Pressure { memory, disk, pids }
    }

    /// The four conditions, given whether the runtime works (`runtime_problem` says why not).
    pub fn conditions(&self, runtime_problem: Option<&str>) -> Vec<Condition> {
        vec![
            Condition::memory_pressure(self.memory),
            Condition::disk_pressure(self.disk),
            Condition::pid_pressure(self.pids),
            Condition::ready(runtime_problem),
        ]
    }
}

/// `part` is under `min_percent` of `whole` (a filesystem without inode counts never is).
fn below_percent(part: u64, whole: u64, min_percent: u64) -> bool {
    whole > 0 && part.saturating_mul(100) < whole.saturating_mul(min_percent)
}

/// Tasks (threads) alive and the id limit: the kernel's count from `/proc/loadavg` against
/// the smaller of `pid_max` and `threads-max`, since either one ends forks.
fn pid_usage() -> Option<(u64, u64)> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let used: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let limit = match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((used, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_machine_is_not_under_pressure() {
        let p = Pressure::read(&std::env::temp_dir());
        assert!(!p.memory && !p.pids, "{p:?}");
        let (used, limit) = pid_usage().expect("pid usage");
        assert!(used > 0 && limit > used);
        let c = p.conditions(Some("container runtime is down"));
        assert_eq!(c[3].status, "False");
        assert_eq!(c[0].reason, "KubeletHasSufficientMemory");
    }

    #[test]
    fn thresholds_are_percentages() {
        assert!(below_percent(9, 100, 10));
        assert!(!below_percent(10, 100, 10));
        assert!(!below_percent(0, 0, 5));
    }
}
