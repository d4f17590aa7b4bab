//! `capstan container-shim exec <libcontainer root> <id> <timeout ms> <argv…>`: runs a process
//! in a running container (its namespaces and cgroup, via libcontainer's tenant builder) with
//! the shim's own stdio, kills it at the timeout (0: none), and exits with its exit code.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::process;

/// The exit code when the timeout killed the process (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;
/// The exit code when the process could not be started (as a shell's "cannot execute").
pub const CANNOT_EXEC: i32 = 126;
/// The timeout argument meaning "none" (streaming exec: the client decides when it ends).
pub const NO_TIMEOUT: &str = "0";

pub fn main(lc_root: &Path, lc_id: &str, timeout: Option<Duration>, argv: Vec<String>) -> i32 {
    // libcontainer takes ownership of the fds it is given: hand it copies of ours.
    let dup = |fd: i32| -> Result<OwnedFd, String> {
        // SAFETY: BorrowedFd of stdio fds 0/1/2, which stay open for the process's lifetime.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed
            .try_clone_to_owned()
            .map_err(|e| format!("dup {fd}: {e}"))
    };
    let built = (|| -> Result<i32, String> {
        let builder = ContainerBuilder::new(lc_id.to_string(), SyscallType::default())
            .with_root_path(lc_root)
            .map_err(|e| e.to_string())?
            .with_stdin(dup(0)?)
            .with_stdout(dup(1)?)
            .with_stderr(dup(2)?)
            .with_executor(super::executor::ResetSignalsExecutor)
            .as_tenant()
            .with_container_args(argv)
            .with_detach(false);
        let pid = builder.build().map_err(|e| super::shim::describe(&e))?;
        Ok(pid.as_raw())
    })();
    let pid = match built {
        Ok(pid) => pid,
        Err(reason) => {
            eprintln!("exec failed: {reason}");
            return CANNOT_EXEC;
        }
    };
    // Told to end (the agent's session lost its client): the process in the container ends
    // too. Blocked only now, after the process forked, so it keeps the default mask.
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        mask.add(sig);
    }
    let signals = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC))
        .ok();
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    if let Ok(pidfd) = process::pidfd_open(pid) {
        loop {
            let wait = match deadline {
                Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if let Some(s) = &signals {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, wait) {
                Ok(0) => {
                    let _ = process::signal(pid, Signal::SIGKILL);
                    let _ = waitpid(pid);
                    return TIMED_OUT;
                }
                Ok(_) => {
                    let told_to_end = fds
                        .get(1)
                        .and_then(|f| f.revents())
                        .is_some_and(|r| !r.is_empty());
                    if told_to_end {
                        let _ = process::signal(pid, Signal::SIGKILL);
                    }
                    break;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("exec: poll: {e}");
                    break;
                }
            }
        }
    }
    match waitpid(pid) {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => 255,
    }
}

fn waitpid(pid: i32) -> Option<WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(s) => return Some(s),
            Err(_) => return None,
        }
    }
}
