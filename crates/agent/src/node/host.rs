//! What this machine is, read from the kernel: CPUs, memory, the agent root's filesystem,
//! identity (machine-id, boot id, uname, os-release) and the address of its default route.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;

/// The kubelet's default hard eviction threshold for memory (`memory.available<100Mi`):
/// allocatable memory is capacity minus it, and MemoryPressure starts below it.
pub const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;

/// Host facts that do not change while the agent runs.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub cpus: usize,
    pub memory_total_kib: u64,
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    /// As Go names it (`GOARCH`): amd64, arm64, ...
    pub architecture: &'static str,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub internal_ip: IpAddr,
}

impl HostFacts {
    pub fn read(agent_root: &Path) -> HostFacts {
        let fs = filesystem_stats(agent_root).unwrap_or_default();
        HostFacts {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_total_kib: meminfo_kib("MemTotal").unwrap_or(0),
            ephemeral_storage_bytes: fs.total_bytes,
            kernel_version: kernel_release(),
            os_image: os_image(),
            architecture: go_arch(),
            machine_id: read_trimmed("/etc/machine-id"),
            // Readable by root only on most machines; upstream leaves it empty otherwise.
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            internal_ip: default_route_address().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    /// Allocatable memory in Ki: capacity minus the hard eviction threshold.
    pub fn allocatable_memory_kib(&self) -> u64 {
        self.memory_total_kib
            .saturating_sub(EVICTION_MEMORY_BYTES / 1024)
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One `/proc/meminfo` field (they are in kB, which the kernel means as KiB).
pub fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Sizes of the filesystem holding `path` (the nearest existing ancestor if it is not there yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

pub fn filesystem_stats(path: &Path) -> Option<FsStats> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    Some(FsStats {
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_inodes: st.f_files,
        free_inodes: st.f_ffree,
    })
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// `PRETTY_NAME` of os-release, as the kubelet reports it.
fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

/// The source address the kernel picks for the default route (the address of its
/// interface): a connected UDP socket learns it without sending anything.
fn default_route_address() -> Option<IpAddr> {
    let gateway = default_gateway()?;
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).ok()?;
    socket
        .connect(SocketAddr::new(IpAddr::V4(gateway), 9))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The IPv4 default route's gateway from `/proc/net/route` (destination 0, mask 0); an
/// on-link default route (gateway 0) yields a public address to route towards instead.
fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 || cols[1] != "00000000" || cols[7] != "00000000" {
            return None;
        }
        // The file prints the address as a host-order (little-endian) u32.
        let raw = u32::from_str_radix(cols[2], 16).ok()?;
        let gw = Ipv4Addr::from(raw.swap_bytes());
        Some(if gw.is_unspecified() {
            Ipv4Addr::new(192, 0, 2, 1)
        } else {
            gw
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_match_the_kernel() {
        let dir = std::env::temp_dir();
        let facts = HostFacts::read(&dir);
        assert!(facts.cpus >= 1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        assert!(meminfo.contains(&format!("{} kB", facts.memory_total_kib)));
        assert!(facts.ephemeral_storage_bytes > 0);
        assert_eq!(
            facts.allocatable_memory_kib(),
            facts.memory_total_kib - 102_400
        );
        assert!(!facts.kernel_version.is_empty());
        assert_eq!(facts.boot_id.len(), 36);
        assert!(["amd64", "arm64"].contains(&facts.architecture));
    }
}
