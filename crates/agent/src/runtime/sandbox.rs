//! A pod's sandbox namespaces: `capstan container-shim sandbox <dir> <hostname> <own|host>
//! <pid|nopid>` unshares net (unless host), ipc and uts, sets the hostname, brings `lo` up and
//! pins each namespace by bind-mounting `/proc/self/ns/<kind>` onto `<dir>/<kind>`, then exits.
//! A shared PID namespace needs a live PID 1: a detached child that only reaps (`pause.json`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

pub const NET: &str = "net";
pub const IPC: &str = "ipc";
pub const UTS: &str = "uts";
pub const PID: &str = "pid";
/// The shared PID namespace's init (pid and start time), killed with the sandbox.
pub const PAUSE: &str = "pause.json";

pub fn main(dir: &Path, hostname: &str, own_network: bool, share_pid: bool) -> i32 {
    match make(dir, hostname, own_network, share_pid) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sandbox {}: {e}", dir.display());
            1
        }
    }
}

fn make(dir: &Path, hostname: &str, own_network: bool, share_pid: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating the dir: {e}"))?;
    // A hostNetwork pod keeps the node's network and hostname; it still gets its own IPC.
    let mut kinds = vec![IPC];
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if own_network {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
        kinds.push(NET);
        kinds.push(UTS);
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if own_network {
        nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname: {e}"))?;
        loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    for kind in kinds {
        let target = dir.join(kind);
        std::fs::write(&target, b"").map_err(|e| format!("creating {kind}: {e}"))?;
        let source = format!("/proc/self/ns/{kind}");
        nix::mount::mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("pinning the {kind} namespace: {e}"))?;
    }
    if share_pid {
        start_pause(dir)?;
    }
    Ok(())
}

/// Forks the shared PID namespace's init and pins the namespace through it.
fn start_pause(dir: &Path) -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid: {e}"))?;
    // SAFETY: the sandbox helper is single-threaded (it runs before any runtime exists).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => pause(),
        nix::unistd::ForkResult::Parent { child } => {
            let pid = child.as_raw();
            let record = super::record::ShimFile {
                pid,
                start_ticks: super::process::start_ticks(pid).unwrap_or(0),
            };
            super::record::write(dir, PAUSE, &record)
                .map_err(|e| format!("recording the pause process: {e}"))?;
            let target = dir.join(PID);
            std::fs::write(&target, b"").map_err(|e| format!("creating pid: {e}"))?;
            let source = format!("/proc/{pid}/ns/pid");
            nix::mount::mount(
                Some(source.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("pinning the pid namespace: {e}"))?;
            Ok(())
        }
    }
}

/// PID 1 of a shared PID namespace: reaps the orphans reparented to it, forever.
fn pause() -> ! {
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    // The agent reads the helper's output to its end: let go of those pipes.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    let _ = chld.thread_block();
    loop {
        let _ = chld.wait();
        while let Ok(status) = nix::sys::wait::waitpid(
            None::<nix::unistd::Pid>,
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// `ip link set lo up` by ioctl: a fresh network namespace's loopback starts down.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: reading and writing the flags member the kernel just filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
