//! Processes by pid without races on reuse: start times from `/proc/<pid>/stat`, pidfds to
//! wait for an exit that is not our child (the detached shim), signals.

use std::os::fd::{FromRawFd, OwnedFd};

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22); None if
/// it does not exist.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The process's state letter (`R`, `S`, `Z` …).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Whether the process `pid` that started at `ticks` still runs (a zombie does not).
pub fn is_alive(pid: i32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks) && state(pid) != Some('Z')
}

/// A pidfd for `pid`: readable once it exits.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process `pid` (started at `ticks`) has exited; returns at once if it has.
pub async fn wait_exit(pid: i32, ticks: u64) -> std::io::Result<()> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Checked after opening the pidfd: the pid could have been reused before.
    if !is_alive(pid, ticks) {
        return Ok(());
    }
    // SAFETY: the AsyncFd owns the pidfd, which stays open until it is dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
    };
    let _ready = fd.readable().await?;
    Ok(())
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: i32, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    }
}
