//! Attaching to a container's own stdio: the frames the shim and the agent exchange over the
//! container's `attach.sock`, and the shim's side (listener, clients, the container's input).
//!
//! The shim owns the container's stdio for its whole life, so it is the one place output can
//! be copied to attached clients as well as to the log, and input (a pipe, or the pty master
//! with `tty`) can be fed from them. The agent connects per `kubectl attach` session.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::PollFlags;

/// The socket's name in the container's state dir.
pub const SOCKET: &str = "attach.sock";

/// Client → shim: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Client → shim: the client closed its stdin (ends the container's with `stdinOnce`).
pub const STDIN_CLOSE: u8 = 1;
/// Client → shim: a terminal size, width then height as big-endian u16.
pub const RESIZE: u8 = 2;
/// Shim → client: the container's stdout (its terminal's output with `tty`).
pub const STDOUT: u8 = 1;
/// Shim → client: the container's stderr.
pub const STDERR: u8 = 2;

/// A frame is a kind byte, a big-endian u32 length and the payload.
pub const HEADER: usize = 5;
/// Payloads above this end the connection: nothing legitimate is that large.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Output queued for one client beyond this drops that client: a slow reader must never
/// stall the container's log.
const MAX_CLIENT_BACKLOG: usize = 4 << 20;
/// Input queued for the container beyond this stops reading clients until it drains.
const MAX_INPUT_BACKLOG: usize = 1 << 20;
/// More clients than this are turned away.
const MAX_CLIENTS: usize = 32;

pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Takes the complete frames at the start of `buf`; `Err` on a frame no peer would send.
pub fn take_frames(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let kind = buf[at];
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("an attach frame of {len} bytes"));
        }
        if buf.len() - at - HEADER < len {
            break;
        }
        frames.push((kind, buf[at + HEADER..at + HEADER + len].to_vec()));
        at += HEADER + len;
    }
    buf.drain(..at);
    Ok(frames)
}

/// A path to `name` in `dir` that fits a socket address whatever `dir`'s length: through the
/// `/proc/self/fd` link of an open descriptor of the dir, which must outlive the use.
pub fn short_path(dir_fd: BorrowedFd<'_>, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()))
}

/// Binds the attach socket of the container whose state dir is `dir` (a stale one from an
/// earlier shim is replaced).
pub fn listen(dir: &Path) -> std::io::Result<UnixListener> {
    let dir_fd = std::fs::File::open(dir)?;
    let path = short_path(dir_fd.as_fd(), SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Where input for the container goes.
pub enum Input {
    /// The container has no stdin (`stdin: false`): input is dropped.
    None,
    /// The write end of the container's stdin pipe.
    Pipe(OwnedFd),
    /// The pty master (`tty: true`): input is typed into the terminal, resizes apply to it.
    Pty(OwnedFd),
}

struct Client {
    stream: UnixStream,
    inbound: Vec<u8>,
    outbound: Vec<u8>,
    /// It sent stdin (so its leaving ends a `stdinOnce` container's input).
    used_stdin: bool,
    /// It has nothing more to send (it shut down its side); it still gets output.
    read_closed: bool,
}

/// The shim's attach side: it is polled along with the container's output in the shim's loop.
pub struct Server {
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    input: Input,
    pending_input: Vec<u8>,
    stdin_once: bool,
    /// `stdinOnce`: input is closed once the first session that used it ends.
    close_input_when_drained: bool,
}

/// What one poll slot of the server watches.
#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Input,
    Client(usize),
}

impl Server {
    pub fn new(listener: Option<UnixListener>, input: Input, stdin_once: bool) -> Self {
        if let Input::Pipe(fd) | Input::Pty(fd) = &input {
            set_nonblocking(fd);
        }
        Server {
            listener,
            clients: Vec::new(),
            input,
            pending_input: Vec::new(),
            stdin_once,
            close_input_when_drained: false,
        }
    }

    /// The descriptors to poll and for what, in an order `handle` takes back.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.slots()
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Listener => self
                    .listener
                    .as_ref()
                    .map(|l| (l.as_fd(), PollFlags::POLLIN)),
                Slot::Input => self.input_fd().map(|fd| (fd, PollFlags::POLLOUT)),
                Slot::Client(i) => {
                    let c = &self.clients[i];
                    let mut flags = PollFlags::empty();
                    if !c.read_closed && self.pending_input.len() < MAX_INPUT_BACKLOG {
                        flags |= PollFlags::POLLIN;
                    }
                    if !c.outbound.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    Some((c.stream.as_fd(), flags))
                }
            })
            .collect()
    }

    fn slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        if self.listener.is_some() {
            slots.push(Slot::Listener);
        }
        if !self.pending_input.is_empty() && self.input_fd().is_some() {
            slots.push(Slot::Input);
        }
        slots.extend((0..self.clients.len()).map(Slot::Client));
        slots
    }

    fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.input {
            Input::Pipe(fd) | Input::Pty(fd) => Some(fd.as_fd()),
            Input::None => None,
        }
    }

    /// Serves what the poll found ready; `revents` has one entry per `poll_set` entry.
    pub fn handle(&mut self, revents: &[PollFlags]) {
        let slots = self.slots();
        let mut gone = Vec::new();
        for (slot, ready) in slots.into_iter().zip(revents.iter().copied()) {
            if ready.is_empty() {
                continue;
            }
            match slot {
                Slot::Listener => self.accept(),
                Slot::Input => self.flush_input(),
                Slot::Client(i) => {
                    if !self.serve_client(i, ready) {
                        gone.push(i);
                    }
                }
            }
        }
        for i in gone.into_iter().rev() {
            let c = self.clients.remove(i);
            if c.used_stdin && self.stdin_once {
                self.close_input_when_drained = true;
            }
        }
        self.maybe_close_input();
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        while let Ok((stream, _)) = listener.accept() {
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Client {
                stream,
                inbound: Vec::new(),
                outbound: Vec::new(),
                used_stdin: false,
                read_closed: false,
            });
        }
    }

    /// Reads and writes one client; false when it is gone (or misbehaved).
    fn serve_client(&mut self, i: usize, ready: PollFlags) -> bool {
        if ready.intersects(PollFlags::POLLOUT) && !flush(&mut self.clients[i]) {
            return false;
        }
        if ready.intersects(PollFlags::POLLERR)
            || (self.clients[i].read_closed && ready.intersects(PollFlags::POLLHUP))
        {
            return false;
        }
        if !ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            return true;
        }
        let mut buf = [0u8; 16 * 1024];
        let c = &mut self.clients[i];
        let n = match c.stream.read(&mut buf) {
            Ok(0) => {
                // A half-close: its input ended (its stdin, for `stdinOnce`), output goes on.
                c.read_closed = true;
                if c.used_stdin && self.stdin_once {
                    self.close_input_when_drained = true;
                }
                return true;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(_) => return false,
        };
        c.inbound.extend_from_slice(&buf[..n]);
        let frames = match take_frames(&mut c.inbound) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("container-shim: attach client dropped: {e}");
                return false;
            }
        };
        for (kind, payload) in frames {
            match kind {
                STDIN => {
                    self.clients[i].used_stdin = true;
                    if !matches!(self.input, Input::None) && !self.close_input_when_drained {
                        self.pending_input.extend_from_slice(&payload);
                    }
                }
                STDIN_CLOSE if self.stdin_once => self.close_input_when_drained = true,
                RESIZE if payload.len() == 4 => {
                    if let Input::Pty(fd) = &self.input {
                        let width = u16::from_be_bytes([payload[0], payload[1]]);
                        let height = u16::from_be_bytes([payload[2], payload[3]]);
                        resize(fd, width, height);
                    }
                }
                _ => {}
            }
        }
        self.flush_input();
        true
    }

    fn flush_input(&mut self) {
        let fd = match &self.input {
            Input::Pipe(fd) | Input::Pty(fd) => fd,
            Input::None => {
                self.pending_input.clear();
                return;
            }
        };
        while !self.pending_input.is_empty() {
            match nix::unistd::write(fd, &self.pending_input) {
                Ok(n) => {
                    self.pending_input.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // The container closed its stdin: what is queued can never be read.
                    self.pending_input.clear();
                    self.input = Input::None;
                    return;
                }
            }
        }
    }

    /// `stdinOnce`: once its session ended and what it typed reached the container, the
    /// container's stdin ends. A terminal cannot be half-closed: it gets an end-of-file
    /// character (^D) instead, which a shell at its prompt takes as the end of input.
    fn maybe_close_input(&mut self) {
        if !self.close_input_when_drained || !self.pending_input.is_empty() {
            return;
        }
        match std::mem::replace(&mut self.input, Input::None) {
            Input::Pty(fd) => {
                let _ = nix::unistd::write(&fd, &[0x04]);
            }
            Input::Pipe(fd) => drop(fd),
            Input::None => {}
        }
    }

    /// Copies container output to every client (after the log has it).
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        for chunk in data.chunks(MAX_PAYLOAD) {
            let bytes = frame(kind, chunk);
            for c in &mut self.clients {
                c.outbound.extend_from_slice(&bytes);
            }
        }
        let mut i = 0;
        while i < self.clients.len() {
            let c = &mut self.clients[i];
            if !flush(c) || c.outbound.len() > MAX_CLIENT_BACKLOG {
                self.clients.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The container exited: what is queued goes out (best effort, without blocking), then
    /// every client sees its connection end.
    pub fn finish(&mut self) {
        for c in &mut self.clients {
            let _ = flush(c);
        }
        self.clients.clear();
        self.listener = None;
    }
}

/// Writes what is queued for `c` without blocking; false if the client is gone.
fn flush(c: &mut Client) -> bool {
    while !c.outbound.is_empty() {
        match c.stream.write(&c.outbound) {
            Ok(0) => return false,
            Ok(n) => {
                c.outbound.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

fn set_nonblocking(fd: &OwnedFd) {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(nix::fcntl::OFlag::from_bits_truncate)
        .unwrap_or(nix::fcntl::OFlag::empty());
    let _ = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    );
}

/// Sets a terminal's size (TIOCSWINSZ on its master).
pub fn resize(master: &OwnedFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we pass by reference, on a descriptor we own.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_come_out_whole() {
        let mut wire = frame(STDIN, b"hello");
        wire.extend(frame(RESIZE, &[0, 80, 0, 24]));
        let mut buf = wire[..7].to_vec();
        assert_eq!(take_frames(&mut buf).expect("ok"), vec![]);
        buf.extend_from_slice(&wire[7..]);
        assert_eq!(
            take_frames(&mut buf).expect("ok"),
            vec![(STDIN, b"hello".to_vec()), (RESIZE, vec![0, 80, 0, 24])]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut buf = vec![STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(take_frames(&mut buf).is_err());
    }

    #[test]
    fn a_client_gets_output_and_its_input_reaches_the_container() {
        let dir = tempfile::tempdir().expect("tmp");
        let listener = listen(dir.path()).expect("listen");
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let mut server = Server::new(Some(listener), Input::Pipe(write_end), true);
        let dir_fd = std::fs::File::open(dir.path()).expect("dir");
        let mut client = UnixStream::connect(short_path(dir_fd.as_fd(), SOCKET)).expect("connect");
        let pump = |server: &mut Server| {
            let mut fds: Vec<nix::poll::PollFd> = server
                .poll_set()
                .into_iter()
                .map(|(fd, f)| nix::poll::PollFd::new(fd, f))
                .collect();
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).expect("poll");
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            server.handle(&revents);
        };
        pump(&mut server); // accept
        server.broadcast(STDOUT, b"out");
        let mut got = [0u8; 8];
        client.read_exact(&mut got).expect("read");
        assert_eq!(&got, &frame(STDOUT, b"out")[..]);
        client.write_all(&frame(STDIN, b"typed")).expect("write");
        pump(&mut server);
        let mut typed = [0u8; 5];
        nix::unistd::read(read_end.as_raw_fd(), &mut typed).expect("read stdin");
        assert_eq!(&typed, b"typed");
        // stdinOnce: the session's end is the container's end of input.
        drop(client);
        pump(&mut server);
        let mut rest = [0u8; 1];
        assert_eq!(
            nix::unistd::read(read_end.as_raw_fd(), &mut rest).expect("eof"),
            0
        );
    }
}
