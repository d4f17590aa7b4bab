//! The shim: `capstan container-shim run <container dir>` detaches from the agent, mounts the
//! rootfs, has libcontainer create and start the container with its output on pipes, reports
//! "started" (or why not) on its stdout, copies the output into the rotating log, waits for the
//! exit, records it (code, OOM, time) and deletes the libcontainer container.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use std::os::unix::net::UnixListener;

use super::attach;
use super::cgroups::Hierarchy;
use super::process;
use super::record::{self, ContainerFile, ErrorFile, ExitFile, ShimFile, StartReport, StartedFile};
use crate::logs::format::Stream;
use crate::logs::writer::LogWriter;

/// How long output still arriving after the exit is copied (processes outside the container's
/// own PID namespace may hold its pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The console socket's name in the container's state dir (`tty` containers).
const CONSOLE_SOCKET: &str = "console.sock";
/// How long the init's terminal may take to arrive after the start.
const CONSOLE_TIMEOUT_MS: u16 = 5000;

pub fn run(dir: &Path) -> i32 {
    let report = match take_report_fd() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("container-shim: setting up the report pipe: {e}");
            return 1;
        }
    };
    // Detach: the agent reaps only the first process; the second leads a new session; the
    // third, reparented to init, runs the container.
    // SAFETY: the shim is single-threaded (it runs before any runtime or thread exists).
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("container-shim: fork: {e}");
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: as above, still single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => {
            // SAFETY: leaving at once without running anything of the parent's.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Child) => {}
        Err(e) => {
            send_report(report, &failed(format!("fork: {e}")));
            return 1;
        }
    }
    // A long-lived process should not keep the agent's working directory (and its mount) busy.
    let _ = std::env::set_current_dir("/");
    let pid = std::process::id() as i32;
    let shim = ShimFile {
        pid,
        start_ticks: process::start_ticks(pid).unwrap_or(0),
    };
    if let Err(e) = record::write(dir, record::SHIM, &shim) {
        send_report(report, &failed(format!("recording the shim: {e}")));
        return 1;
    }
    let file: ContainerFile = match record::read(dir, record::CONTAINER) {
        Ok(Some(f)) => f,
        Ok(None) => {
            send_report(report, &failed("container.json is missing".to_string()));
            return 1;
        }
        Err(e) => {
            send_report(report, &failed(format!("reading container.json: {e}")));
            return 1;
        }
    };
    let started = match start(dir, &file) {
        Ok(s) => s,
        Err(reason) => {
            eprintln!("container-shim {}: {reason}", file.id);
            let error = ErrorFile { reason };
            if let Err(e) = record::write(dir, record::ERROR, &error) {
                eprintln!("container-shim {}: recording the error: {e}", file.id);
            }
            delete_container(&file);
            send_report(report, &StartReport::Failed(error));
            return 1;
        }
    };
    let started_file = StartedFile {
        pid: started.pid,
        started_at_ns: record::to_ns(started.at),
    };
    if let Err(e) = record::write(dir, record::STARTED, &started_file) {
        eprintln!("container-shim {}: recording the start: {e}", file.id);
    }
    send_report(report, &StartReport::Started(started_file));
    supervise(dir, &file, started)
}

struct Started {
    pid: i32,
    at: SystemTime,
    stdout: OwnedFd,
    /// None with a terminal: it has one output.
    stderr: Option<OwnedFd>,
    attach: attach::Server,
}

fn failed(reason: String) -> StartReport {
    StartReport::Failed(ErrorFile { reason })
}

/// Moves the agent's report pipe (our stdout) off fd 1, which becomes /dev/null, so nothing
/// the container or libcontainer writes there can reach the agent.
fn take_report_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates fd 1 into a new fd we then own.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by fcntl and is owned by nothing else.
    let report = unsafe { OwnedFd::from_raw_fd(fd) };
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 1).map_err(std::io::Error::from)?;
    Ok(report)
}

fn send_report(fd: OwnedFd, report: &StartReport) {
    let mut file = std::fs::File::from(fd);
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = file.write_all(&line) {
        // The agent gave up waiting; the state files still say what happened.
        eprintln!("container-shim: reporting to the agent: {e}");
    }
}

fn start(dir: &Path, file: &ContainerFile) -> Result<Started, String> {
    super::rootfs::mount_overlay(&file.layers, &file.rootfs).map_err(|e| e.to_string())?;
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    std::fs::create_dir_all(&file.libcontainer_root)
        .map_err(|e| format!("creating {}: {e}", file.libcontainer_root.display()))?;
    let mut builder = ContainerBuilder::new(file.libcontainer_id.clone(), SyscallType::default())
        .with_root_path(&file.libcontainer_root)
        .map_err(|e| e.to_string())?
        .with_executor(super::executor::ResetSignalsExecutor);
    // With `tty` the container's init opens a pty in its own devpts and sends us the master
    // over the console socket; its stdio are the slave. Otherwise its output goes to pipes.
    let console = if file.tty {
        Some(console_listener(dir)?)
    } else {
        None
    };
    let mut outputs = None;
    let mut input = attach::Input::None;
    if let Some((_, path)) = &console {
        builder = builder.with_console_socket(Some(path));
    } else {
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        builder = builder.with_stdout(stdout_w).with_stderr(stderr_w);
        if file.stdin {
            let (stdin_r, stdin_w) = pipe()?;
            builder = builder.with_stdin(stdin_r);
            input = attach::Input::Pipe(stdin_w);
        }
        outputs = Some((stdout_r, Some(stderr_r)));
    }
    // The container's init reports why it failed on its stderr (libcontainer's tracing),
    // before any workload ran: that text is the reason worth showing.
    let with_init_output = |reason: String| match &outputs {
        Some((_, Some(stderr))) => match pending_text(stderr) {
            Some(said) => format!("{reason}: {said}"),
            None => reason,
        },
        _ => reason,
    };
    let mut container = builder
        .as_init(dir)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| with_init_output(describe(&e)))?;
    container
        .start()
        .map_err(|e| with_init_output(describe(&e)))?;
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| "libcontainer reported no pid for the started container".to_string())?;
    let (stdout, stderr) = match (outputs, console) {
        (Some(o), _) => o,
        (None, Some((listener, _))) => {
            let master = receive_master(&listener)?;
            let reading = master
                .try_clone()
                .map_err(|e| format!("dup of the pty master: {e}"))?;
            input = attach::Input::Pty(master);
            (reading, None)
        }
        (None, None) => return Err("the container has neither pipes nor a terminal".into()),
    };
    // A missing attach socket costs attach, not the container.
    let attach = match attach::listen(dir) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("container-shim {}: attach socket: {e}", file.id);
            None
        }
    };
    Ok(Started {
        pid,
        at: SystemTime::now(),
        stdout,
        stderr,
        attach: attach::Server::new(attach, input, file.stdin_once),
    })
}

/// What is already waiting in a pipe (at most 4 KiB), without blocking.
fn pending_text(fd: &OwnedFd) -> Option<String> {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    let mut buf = [0u8; 4096];
    let n = nix::unistd::read(fd.as_raw_fd(), &mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The console socket libcontainer's init connects to; the path is the long one (libcontainer
/// reaches it through a short symlink of its own), the bind goes through `/proc/self/fd`.
fn console_listener(dir: &Path) -> Result<(UnixListener, PathBuf), String> {
    let path = dir.join(CONSOLE_SOCKET);
    let _ = std::fs::remove_file(&path);
    let dir_fd = std::fs::File::open(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
    let listener = UnixListener::bind(attach::short_path(dir_fd.as_fd(), CONSOLE_SOCKET))
        .map_err(|e| format!("console socket: {e}"))?;
    Ok((listener, path))
}

/// The pty master the container's init sent (it did so before `start` returned).
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::from(CONSOLE_TIMEOUT_MS)) {
        Ok(n) if n > 0 => {}
        _ => return Err("the container's init sent no terminal".into()),
    }
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("console socket accept: {e}"))?;
    let mut buf = [0u8; 512];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the pty master: {e}"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("receiving the pty master: {e}"))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS installed this descriptor in our table for us alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("the console socket carried no descriptor".into())
}

/// libcontainer's error with its causes (the executable-not-found reason is a cause).
pub(super) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Copies output until the container exits (to the log and to attached clients, whose input
/// goes to the container), then records the exit and cleans up.
fn supervise(dir: &Path, file: &ContainerFile, started: Started) -> i32 {
    let mut log = match LogWriter::open(&file.log_path, file.log_max_size, file.log_max_files) {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("container-shim {}: {e}", file.id);
            None
        }
    };
    let pidfd = process::pidfd_open(started.pid).ok();
    let mut attach = started.attach;
    let mut streams: Vec<(Stream, Option<OwnedFd>)> = vec![
        (Stream::Stdout, Some(started.stdout)),
        (Stream::Stderr, started.stderr),
    ];
    let mut status: Option<WaitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_none() && pidfd.is_none() {
            // No pidfd (very old kernel): block in waitpid once output has ended.
            if streams.iter().all(|(_, fd)| fd.is_none()) {
                status = Some(wait_child(started.pid));
            }
        }
        let open: Vec<usize> = (0..streams.len())
            .filter(|i| streams[*i].1.is_some())
            .collect();
        if status.is_some()
            && (open.is_empty() || drain_deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|i| streams[*i].1.as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let watch_exit = status.is_none() && pidfd.is_some();
        if let (true, Some(p)) = (watch_exit, pidfd.as_ref()) {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let fixed = fds.len();
        fds.extend(
            attach
                .poll_set()
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        );
        let timeout = match drain_deadline {
            Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
            None if watch_exit || !open.is_empty() => PollTimeout::NONE,
            None => PollTimeout::ZERO,
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("container-shim {}: poll: {e}", file.id);
                break;
            }
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        // First, while its slots still match what was polled (output below may drop clients).
        attach.handle(&revents[fixed..]);
        let ready: Vec<bool> = revents[..fixed].iter().map(|r| !r.is_empty()).collect();
        for (slot, i) in open.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            let (stream, fd) = &mut streams[*i];
            let n = match fd
                .as_ref()
                .map(|f| nix::unistd::read(f.as_raw_fd(), &mut buf))
            {
                Some(Ok(n)) => n,
                Some(Err(nix::errno::Errno::EINTR)) | Some(Err(nix::errno::Errno::EAGAIN)) => {
                    continue
                }
                Some(Err(_)) | None => 0,
            };
            if n == 0 {
                *fd = None;
                continue;
            }
            if let Some(w) = log.as_mut() {
                if let Err(e) = w.write(*stream, &buf[..n]) {
                    eprintln!("container-shim {}: {e}", file.id);
                }
            }
            let kind = match stream {
                Stream::Stdout => attach::STDOUT,
                Stream::Stderr => attach::STDERR,
            };
            attach.broadcast(kind, &buf[..n]);
        }
        if watch_exit && ready.get(open.len()).copied().unwrap_or(false) {
            status = Some(wait_child(started.pid));
            drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
    }
    attach.finish();
    if let Some(w) = log.as_mut() {
        if let Err(e) = w.flush_partial() {
            eprintln!("container-shim {}: {e}", file.id);
        }
    }
    let exit_code = match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => 255,
    };
    let oom_killed = Hierarchy::detect()
        .map(|h| h.oom_kills(&file.cgroup_path) > 0)
        .unwrap_or(false);
    let exit = ExitFile {
        exit_code,
        oom_killed,
        started_at_ns: Some(record::to_ns(started.at)),
        finished_at_ns: record::to_ns(SystemTime::now()),
    };
    if let Err(e) = record::write(dir, record::EXIT, &exit) {
        eprintln!("container-shim {}: recording the exit: {e}", file.id);
    }
    let marker = crate::logs::exited_marker_path(&file.log_path);
    if let Err(e) = std::fs::write(&marker, b"") {
        eprintln!(
            "container-shim {}: writing {}: {e}",
            file.id,
            marker.display()
        );
    }
    delete_container(file);
    0
}

fn wait_child(pid: i32) -> WaitStatus {
    loop {
        // __WALL: libcontainer clones the init without an exit signal.
        match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => return status,
            Err(e) => {
                eprintln!("container-shim: waitpid {pid}: {e}");
                return WaitStatus::StillAlive;
            }
        }
    }
}

/// Deletes the libcontainer container (its state and cgroup), killing what is left in it.
pub fn delete_container(file: &ContainerFile) {
    let root: PathBuf = file.libcontainer_root.join(&file.libcontainer_id);
    if !root.exists() {
        return;
    }
    match libcontainer::container::Container::load(root) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                eprintln!("container-shim {}: deleting: {}", file.id, describe(&e));
            }
        }
        Err(e) => eprintln!(
            "container-shim {}: loading for delete: {}",
            file.id,
            describe(&e)
        ),
    }
}
