//! Exec sessions (`/exec/...`): the client's stdin/stdout/stderr/resize/error streams from
//! either transport (SPDY streams or `channel.k8s.io` WebSocket channels) wired to a process
//! the runtime starts in the container, with a pty for `tty`; the exit is the final Status.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Message;

use super::spdy::header_block::get as header;
use super::spdy::session::{Session, StreamWriter};
use super::websocket;
use crate::runtime::Runtime;

/// The client must have opened all its streams within this (upstream's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process exits, its output still in pipes gets this long to drain (a daemon it
/// left behind may hold the pipes open for ever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// WebSocket channels of `v4`/`v5.channel.k8s.io`.
pub const CH_STDIN: u8 = 0;
pub const CH_STDOUT: u8 = 1;
pub const CH_STDERR: u8 = 2;
pub const CH_ERROR: u8 = 3;
pub const CH_RESIZE: u8 = 4;
/// v5: `[255, channel]` closes a channel (the client's stdin).
pub const CH_CLOSE: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The query as upstream's kubelet reads it (`command` repeated; booleans `1`/`true`).
pub fn parse_options(
    pairs: &[(String, String)],
    need_command: bool,
) -> Result<ExecOptions, String> {
    let flag = |k: &str| {
        pairs
            .iter()
            .any(|(n, v)| n == k && (v == "1" || v.eq_ignore_ascii_case("true")))
    };
    let opts = ExecOptions {
        command: pairs
            .iter()
            .filter(|(n, _)| n == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag("stdin") || flag("input"),
        stdout: flag("stdout") || flag("output"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    if need_command && opts.command.is_empty() {
        return Err("you must specify a command".into());
    }
    Ok(opts)
}

/// Where one of our output streams goes.
pub enum Out {
    Spdy(StreamWriter),
    Ws {
        channel: u8,
        tx: mpsc::Sender<Message>,
    },
}

impl Out {
    pub(super) async fn write(&self, data: Bytes) -> bool {
        match self {
            Out::Spdy(w) => w.write(data).await.is_ok(),
            Out::Ws { channel, tx } => tx
                .send(websocket::channel_message(*channel, &data))
                .await
                .is_ok(),
        }
    }

    pub(super) async fn close(&self) {
        if let Out::Spdy(w) = self {
            let _ = w.close().await;
        }
    }
}

/// The client's side of an exec, whatever the transport.
#[derive(Default)]
pub struct ExecIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    /// JSON `{"Width":…,"Height":…}` objects, possibly several per message.
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub error: Option<Out>,
    /// Turns true when the client's connection ended.
    pub gone: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Waits for the streams kubectl opens for `opts` over SPDY (error, then the ones asked
/// for, resize with a tty), each identified by its `streamType` header.
pub async fn spdy_io(session: &mut Session, opts: &ExecOptions) -> Result<ExecIo, String> {
    let mut io = ExecIo {
        gone: Some(session.gone.clone()),
        ..ExecIo::default()
    };
    let complete = |io: &ExecIo| {
        io.error.is_some()
            && (!opts.stdin || io.stdin.is_some())
            && (!opts.stdout || io.stdout.is_some())
            && (!opts.stderr || opts.tty || io.stderr.is_some())
            && (!opts.tty || io.resize.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&io) {
        let stream = tokio::time::timeout_at(deadline, session.streams.recv())
            .await
            .map_err(|_| "timed out waiting for client to create streams".to_string())?
            .ok_or_else(|| "the client closed the connection".to_string())?;
        match header(&stream.headers, "streamtype").unwrap_or("") {
            "error" => io.error = Some(Out::Spdy(stream.writer)),
            "stdin" => io.stdin = Some(stream.incoming),
            "stdout" => io.stdout = Some(Out::Spdy(stream.writer)),
            "stderr" => io.stderr = Some(Out::Spdy(stream.writer)),
            "resize" => io.resize = Some(stream.incoming),
            other => {
                tracing::debug!(
                    stream_type = other,
                    "exec: ignoring a stream of unknown type"
                );
            }
        }
    }
    Ok(io)
}

/// How long a WebSocket exec session holds its first message (see `websocket_io`).
const CLIENT_SETUP_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// The channels of a `v4`/`v5.channel.k8s.io` WebSocket: a task reads the client's messages
/// into stdin/resize; `tx` carries ours. `v5` lets the client close stdin.
pub fn websocket_io<IO>(
    ws: tokio_tungstenite::WebSocketStream<IO>,
    opts: &ExecOptions,
) -> (ExecIo, mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let opened = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        let mut first = true;
        while let Some(m) = rx.recv().await {
            if first {
                // kubectl 1.30/1.31's client starts reading before it has registered its
                // streams and drops what arrives in between ("Unknown stream id"): a command
                // that ends at once would lose its Status. Nothing goes out in the session's
                // first moments (upstream's API-server stream translator adds such a hop).
                tokio::time::sleep_until(opened + CLIENT_SETUP_GRACE).await;
                first = false;
            }
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(32);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(8);
    let (gone_tx, gone) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _gone = Gone(gone_tx);
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            let (channel, payload) = match websocket::received(msg) {
                websocket::Received::Channel(c, p) => (c, p),
                websocket::Received::Close => break,
                websocket::Received::Other => continue,
            };
            match channel {
                CH_STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(payload).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                CH_RESIZE => {
                    let _ = resize_tx.try_send(payload);
                }
                CH_CLOSE if payload.first() == Some(&CH_STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let out = |channel: u8| Out::Ws {
        channel,
        tx: tx.clone(),
    };
    let io = ExecIo {
        stdin: opts.stdin.then_some(stdin_rx),
        stdout: opts.stdout.then(|| out(CH_STDOUT)),
        stderr: (opts.stderr && !opts.tty).then(|| out(CH_STDERR)),
        resize: opts.tty.then_some(resize_rx),
        error: Some(out(CH_ERROR)),
        gone: Some(gone),
    };
    (io, tx, writer)
}

/// Tells the session its client is gone when the reader ends, however it ends.
struct Gone(tokio::sync::watch::Sender<bool>);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Resolves once the client's connection has ended (never, if nothing says).
pub(super) async fn client_gone(gone: Option<tokio::sync::watch::Receiver<bool>>) {
    match gone {
        Some(mut rx) => {
            if rx.wait_for(|g| *g).await.is_err() {
                // The sender went away without saying: the reader ended all the same.
            }
        }
        None => std::future::pending().await,
    }
}

/// How the command ended, as the error stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Failed(String),
}

/// The final Status written on the error stream (upstream's wording, so kubectl prints
/// `command terminated with exit code N` and exits with N).
pub fn status_json(command: &[String], outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500
        }),
    }
}

/// A pty master, non-blocking, read and written from tokio.
struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: read(2) into a buffer we own, on a descriptor we own.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => return Ok(n),
                // The last slave descriptor closed: the process and its shim are gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: write(2) from a live slice, on a descriptor we own.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, width: u16, height: u16) {
        let size = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize we pass by reference.
        unsafe {
            libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}

/// A new pty pair, both ends close-on-exec from the start: the agent forks shims from many
/// threads, and a long-lived one that inherited a slave would keep this terminal open after
/// its command exits (the master would never read EOF). The master is non-blocking.
/// A pty for an exec session: from the container's own devpts when its init is known (so
/// `tty` in the container names a device it can see, as with runc's console), else the host's.
fn open_pty(container_init: Option<(u32, String)>) -> nix::Result<(OwnedFd, OwnedFd)> {
    if let Some((pid, cgroup)) = container_init {
        match container_pty(pid) {
            // Opened through the pid's root: the pid must still be the container's (in its
            // cgroup), not a process that took the number after the container ended.
            Ok(pair) if in_cgroup(pid, &cgroup) => return Ok(pair),
            Ok(_) => tracing::debug!(pid, "exec: the container's init is gone; the host's pty"),
            // A container without its own devpts (e.g. the host's /dev mounted in): the
            // host's pty still gives a working terminal.
            Err(e) => tracing::debug!(pid, error = %e, "exec: no pty from the container's devpts"),
        }
    }
    host_pty()
}

/// Opens the `ptmx` of the devpts instance mounted in the container (through its init's root,
/// so the agent needs no setns) and takes the peer with TIOCGPTPEER, which needs no path that
/// only exists inside the container.
fn container_pty(pid: u32) -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    use std::os::fd::FromRawFd;
    let ptmx = format!("/proc/{pid}/root/dev/pts/ptmx");
    let master = nix::fcntl::open(
        ptmx.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open(2) just returned this descriptor and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(nix::Error::last());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new descriptor or -1.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the ioctl just returned this descriptor and nothing else owns it.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Whether `pid` is in the cgroup `rel` (relative to a hierarchy's root) by its
/// `/proc/<pid>/cgroup` lines (`N:controllers:/path`, v1 and v2 alike).
fn in_cgroup(pid: u32, rel: &str) -> bool {
    let want = format!("/{}", rel.trim_start_matches('/'));
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path == want || path.ends_with(&want))
    })
}

fn host_pty() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    use std::os::fd::{FromRawFd, IntoRawFd};
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open(2) just returned this descriptor and nothing else owns it; PtyMaster
    // hands its descriptor's ownership over with into_raw_fd.
    let (master, slave) = unsafe {
        (
            OwnedFd::from_raw_fd(master.into_raw_fd()),
            OwnedFd::from_raw_fd(slave),
        )
    };
    Ok((master, slave))
}

#[derive(serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Parses the resize messages in `buf` (complete JSON objects), leaving a partial tail.
pub(super) fn sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut used = 0;
    loop {
        match de.next() {
            Some(Ok(s)) => {
                out.push((s.width, s.height));
                used = de.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Not a size: drop what is there rather than grow for ever.
                used = buf.len();
                break;
            }
            None => {
                used = de.byte_offset();
                break;
            }
        }
    }
    buf.drain(..used.min(buf.len()));
    if buf.len() > 4096 {
        buf.clear();
    }
    out
}

async fn pump_out<R: AsyncRead + Unpin>(mut r: R, out: Out) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !out.write(Bytes::copy_from_slice(&buf[..n])).await {
                    break;
                }
            }
        }
    }
    out.close().await;
}

/// Runs `opts.command` in the container `container_id` wired to `io`; reports the outcome on
/// the error stream and returns it.
pub async fn run(
    runtime: &Runtime,
    container_id: &str,
    opts: &ExecOptions,
    mut io: ExecIo,
) -> Outcome {
    let outcome = match run_process(runtime, container_id, opts, &mut io).await {
        Ok(code) => Outcome::Exited(code),
        Err(message) => Outcome::Failed(message),
    };
    tracing::info!(container_id, ?outcome, tty = opts.tty, "exec ended");
    if let Some(error) = io.error.take() {
        let body = status_json(&opts.command, &outcome).to_string();
        let _ = error.write(Bytes::from(body)).await;
        error.close().await;
    }
    outcome
}

async fn run_process(
    runtime: &Runtime,
    container_id: &str,
    opts: &ExecOptions,
    io: &mut ExecIo,
) -> Result<i32, String> {
    let mut tasks = Vec::new();
    let mut drains = Vec::new();
    let mut child = if opts.tty {
        let init = runtime.running_init(container_id).await;
        let (master, slave_fd) = open_pty(init).map_err(|e| format!("opening a pty: {e}"))?;
        let slave = |fd: &OwnedFd| -> Result<Stdio, String> {
            Ok(Stdio::from(
                fd.try_clone().map_err(|e| format!("dup of the pty: {e}"))?,
            ))
        };
        let stdio = (slave(&slave_fd)?, slave(&slave_fd)?, slave(&slave_fd)?);
        let child = runtime
            .exec_stream(container_id, &opts.command, stdio)
            .await
            .map_err(|e| e.to_string())?;
        drop(slave_fd);
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open (and the same
        // descriptor) until it is dropped.
        let registered = unsafe { AsyncFd::register(master) };
        let master = Arc::new(Pty(registered.map_err(|e| format!("pty: {e}"))?));
        if let Some(out) = io.stdout.take() {
            let m = master.clone();
            drains.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = m.read(&mut buf).await {
                    if n == 0 || !out.write(Bytes::copy_from_slice(&buf[..n])).await {
                        break;
                    }
                }
                out.close().await;
            }));
        }
        if let Some(mut stdin) = io.stdin.take() {
            let m = master.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if m.write_all(&data).await.is_err() {
                        break;
                    }
                }
            }));
        }
        if let Some(mut resize) = io.resize.take() {
            let m = master.clone();
            tasks.push(tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(data) = resize.recv().await {
                    pending.extend_from_slice(&data);
                    for (w, h) in sizes(&mut pending) {
                        m.resize(w, h);
                    }
                }
            }));
        }
        child
    } else {
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let stdio = (
            pipe(io.stdin.is_some()),
            pipe(io.stdout.is_some()),
            pipe(io.stderr.is_some()),
        );
        let mut child = runtime
            .exec_stream(container_id, &opts.command, stdio)
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(out), Some(r)) = (io.stdout.take(), child.stdout.take()) {
            drains.push(tokio::spawn(pump_out(r, out)));
        }
        if let (Some(out), Some(r)) = (io.stderr.take(), child.stderr.take()) {
            drains.push(tokio::spawn(pump_out(r, out)));
        }
        if let (Some(mut stdin), Some(mut w)) = (io.stdin.take(), child.stdin.take()) {
            tasks.push(tokio::spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if w.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // Dropping `w` is the half-close the process sees as end of input.
                let _ = w.shutdown().await;
            }));
        }
        child
    };
    let gone = client_gone(io.gone.take());
    let status = tokio::select! {
        status = child.wait() => status,
        () = gone => {
            // The client left: its command must not run on unseen. The exec shim kills the
            // process in the container when told to end.
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            tracing::debug!(container_id, "exec: the client left, ending its process");
            child.wait().await
        }
    };
    let drain_handles: Vec<_> = drains.iter().map(|d| d.abort_handle()).collect();
    let drained = async {
        for d in drains {
            let _ = d.await;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        // Something else holds the output open (a daemon the command left behind, or a
        // terminal some other process has): stop reading, or its descriptor lives for ever.
        tracing::warn!(
            container_id,
            tty = opts.tty,
            "exec: output still open after the process exited; closing it"
        );
    }
    for t in drain_handles {
        t.abort();
    }
    for t in tasks {
        t.abort();
    }
    let status = status.map_err(|e| format!("waiting for the exec process: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options_are_read_as_the_kubelet_does() {
        let o = parse_options(
            &pairs(&[
                ("command", "sh"),
                ("command", "-c"),
                ("command", "exit 3"),
                ("stdout", "true"),
                ("stderr", "1"),
            ]),
            true,
        )
        .expect("valid");
        assert_eq!(o.command, vec!["sh", "-c", "exit 3"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert!(parse_options(&pairs(&[("command", "true")]), true)
            .expect_err("no streams")
            .contains("at least 1 of stdin, stdout, stderr"));
        assert!(parse_options(&pairs(&[("stdout", "1")]), true).is_err());
        assert!(parse_options(&pairs(&[("stdout", "1")]), false).is_ok());
    }

    #[test]
    fn a_non_zero_exit_is_upstreams_status() {
        let s = status_json(
            &["sh".into(), "-c".into(), "exit 3".into()],
            &Outcome::Exited(3),
        );
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(
            status_json(&[], &Outcome::Exited(0)),
            json!({"metadata": {}, "status": "Success"})
        );
    }

    #[test]
    fn resize_messages_are_split_and_garbage_dropped() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(sizes(&mut buf), vec![(80, 24)]);
        buf.extend_from_slice(br#""Height":40}"#);
        assert_eq!(sizes(&mut buf), vec![(100, 40)]);
        assert!(buf.is_empty());
        let mut bad = b"nonsense".to_vec();
        assert_eq!(sizes(&mut bad), vec![]);
        assert!(bad.is_empty());
    }
}
