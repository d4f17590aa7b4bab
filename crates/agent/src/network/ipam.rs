//! Pod addresses from the node's podCIDR, one file per address held (`<dir>/<ip>` holding the
//! pod uid) so a restarted agent knows which pod has which address; the file's exclusive
//! creation is the allocation.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Cidr, NetworkError};

pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
    lock: Mutex<()>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> NetworkError {
    move |source| NetworkError::Io { context, source }
}

impl Ipam {
    pub fn open(dir: &Path, cidr: Cidr) -> Result<Ipam, NetworkError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            cidr,
            lock: Mutex::new(()),
        })
    }

    /// The pod's address: the one it holds, else the lowest free one (.2 up; .1 is the bridge,
    /// the last is broadcast).
    pub fn allocate(&self, pod_uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = self.lookup(pod_uid) {
            return Ok(ip);
        }
        for n in 2..self.cidr.size().saturating_sub(1) {
            let ip = self.cidr.nth(n);
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(pod_uid.as_bytes())
                        .map_err(io(format!("writing {}", path.display())))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
            }
        }
        Err(NetworkError::Exhausted(self.cidr.to_string()))
    }

    pub fn lookup(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        std::fs::read_dir(&self.dir).ok()?.flatten().find_map(|e| {
            let held = std::fs::read_to_string(e.path()).ok()?;
            (held == pod_uid).then(|| e.file_name().to_str()?.parse().ok())?
        })
    }

    /// Forgets every address held under `dir` (no pod holds one any more).
    pub fn forget_all(dir: &Path) -> Result<(), NetworkError> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    pub fn release(&self, pod_uid: &str) -> Result<(), NetworkError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = self.lookup(pod_uid) {
            let path = self.dir.join(ip.to_string());
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_held_per_pod_and_reused_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path(), Cidr::parse("10.9.0.0/30").expect("cidr")).expect("open");
        let a = ipam.allocate("a").expect("a");
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(
            ipam.allocate("a").expect("again"),
            a,
            "the same pod keeps its address"
        );
        assert!(matches!(
            ipam.allocate("b"),
            Err(NetworkError::Exhausted(_))
        ));
        ipam.release("a").expect("release");
        assert_eq!(ipam.allocate("b").expect("b"), a);
        // A second Ipam on the same dir (a restarted agent) knows who holds what.
        let again =
            Ipam::open(dir.path(), Cidr::parse("10.9.0.0/30").expect("cidr")).expect("open");
        assert_eq!(again.lookup("b"), Some(a));
    }
}
