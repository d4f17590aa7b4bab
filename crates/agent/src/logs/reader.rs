//! Reading a container run's log for `pods/log`: CRI lines across rotated files (oldest
//! first), partial lines joined, tailLines/since/timestamps/limitBytes, and follow.
//!
//! Blocking file I/O throughout: the kubelet endpoint runs it on a blocking thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::format;
use super::{exited_marker_path, rotated_log_path};

/// How often a follower looks for new lines, a rotation or the exited marker.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read per step when looking for the tail from the end.
const TAIL_BLOCK: u64 = 64 * 1024;
/// Output is handed to the sink in chunks of about this size.
const CHUNK: usize = 32 * 1024;

/// What `pods/log` asks for (already validated: no negative counts).
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each line with its time (`<RFC 3339 nano> `).
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
    /// Keep streaming new lines until the container has exited.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("log file {0} does not exist")]
    NotFound(PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the reader's output goes; `write` says false once the reader should stop (the client
/// went away), `closed` is asked while a follower waits for new lines.
pub trait LogSink {
    fn write(&mut self, bytes: &[u8]) -> bool;
    fn closed(&self) -> bool {
        false
    }
}

impl LogSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> bool {
        self.extend_from_slice(bytes);
        true
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The rotated files of `log_path` that exist, oldest first, then `log_path` itself.
pub fn log_files(log_path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    // Rotation keeps numbering contiguous from 1; a gap ends the set.
    for k in 1.. {
        let p = rotated_log_path(log_path, k);
        if !p.exists() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(log_path.to_path_buf());
    rotated
}

/// Streams the log of one run into `sink` as `opts` asks.
pub fn read_log(
    log_path: &Path,
    opts: &LogOptions,
    sink: &mut dyn LogSink,
) -> Result<(), ReadError> {
    if !log_path.exists() {
        return Err(ReadError::NotFound(log_path.to_path_buf()));
    }
    let files = log_files(log_path);
    let (first, offset) = match opts.tail_lines {
        Some(n) => tail_start(&files, n)?,
        None => (0, 0),
    };
    let mut out = Output::new(opts, sink);
    for (i, path) in files.iter().enumerate().skip(first) {
        let is_current = i + 1 == files.len();
        let file = File::open(path).map_err(io_err(path))?;
        let inode = file.metadata().map_err(io_err(path))?.ino();
        let mut reader = BufReader::new(file);
        if i == first {
            reader.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
        }
        if !is_current {
            if !out.pump(&mut reader, path)? {
                break;
            }
            continue;
        }
        if opts.follow {
            return follow(log_path, reader, inode, &mut out);
        }
        out.pump(&mut reader, path)?;
    }
    out.finish();
    Ok(())
}

/// Keeps reading the current file as it grows, moves to the new file after a rotation, and
/// ends once the exited marker is there and everything before it is read.
fn follow(
    log_path: &Path,
    mut reader: BufReader<File>,
    mut inode: u64,
    out: &mut Output<'_>,
) -> Result<(), ReadError> {
    let marker = exited_marker_path(log_path);
    loop {
        // Looked at before reading: lines written before the marker are then all read.
        let exited = marker.exists();
        let rotated = std::fs::metadata(log_path).is_ok_and(|m| m.ino() != inode);
        if !out.pump(&mut reader, log_path)? {
            break;
        }
        if rotated {
            // Our handle is the renamed `.log.1` now, read to its end above (the writer
            // had moved on before we looked); the rest is in the new file.
            let Ok(file) = File::open(log_path) else {
                continue;
            };
            inode = file.metadata().map_err(io_err(log_path))?.ino();
            reader = BufReader::new(file);
            continue;
        }
        if exited {
            break;
        }
        out.flush();
        if out.sink.closed() || out.done {
            break;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    out.finish();
    Ok(())
}

/// The file index and offset where the last `n` lines start. Lines are logical ones: a run
/// of partial (P) lines and the full (F) line ending it count once, as do trailing partials.
fn tail_start(files: &[PathBuf], n: u64) -> Result<(usize, u64), ReadError> {
    let mut ends_seen: u64 = 0;
    let mut at_very_end = true;
    for (i, path) in files.iter().enumerate().rev() {
        let mut file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut pos = len;
        // Bytes after `pos` not yet split into lines: the head of a line spanning blocks.
        let mut carry: Vec<u8> = Vec::new();
        // A last line without its newline is still being written: not a line yet.
        let mut skip_unterminated = true;
        while pos > 0 {
            let step = TAIL_BLOCK.min(pos);
            pos -= step;
            let mut block = vec![0u8; step as usize];
            file.seek(SeekFrom::Start(pos)).map_err(io_err(path))?;
            file.read_exact(&mut block).map_err(io_err(path))?;
            block.extend_from_slice(&carry);
            // Complete lines in `block` are those after a newline; the bytes before the
            // first newline may continue in the previous block.
            let mut end = block.len();
            if skip_unterminated {
                match block.iter().rposition(|b| *b == b'\n') {
                    Some(nl) => end = nl + 1,
                    None => {
                        carry = block;
                        continue;
                    }
                }
                skip_unterminated = false;
            }
            while let Some(nl) = block[..end.saturating_sub(1)]
                .iter()
                .rposition(|b| *b == b'\n')
            {
                let line_start = nl + 1;
                if let Some(found) =
                    count_line(&block[line_start..end], &mut ends_seen, &mut at_very_end, n)
                {
                    if found {
                        return Ok((i, pos + end as u64));
                    }
                }
                end = line_start;
            }
            carry = block[..end].to_vec();
        }
        // What is left starts the file: it is a whole line.
        if !carry.is_empty()
            && count_line(&carry, &mut ends_seen, &mut at_very_end, n) == Some(true)
        {
            return Ok((i, carry.len() as u64));
        }
    }
    Ok((0, 0))
}

/// Counts one raw line met scanning backwards; Some(true) when the start was found just
/// after it (it ends the line before the `n` wanted).
fn count_line(raw: &[u8], ends_seen: &mut u64, at_very_end: &mut bool, n: u64) -> Option<bool> {
    let text = raw.strip_suffix(b"\n").unwrap_or(raw);
    let partial = format::parse(text).is_some_and(|l| l.partial);
    let very_end = std::mem::replace(at_very_end, false);
    if partial {
        // Trailing partials with no F after them are a line of their own.
        if very_end {
            if n == 0 {
                return Some(true);
            }
            *ends_seen += 1;
        }
        return Some(false);
    }
    if *ends_seen == n {
        return Some(true);
    }
    *ends_seen += 1;
    Some(false)
}

/// Formats logical lines into the sink, honouring since, timestamps and limitBytes.
struct Output<'a> {
    opts: &'a LogOptions,
    sink: &'a mut dyn LogSink,
    buf: Vec<u8>,
    /// The partial fragments of the line being joined, and the time of its first one.
    pending: Vec<u8>,
    pending_time: Option<String>,
    written: u64,
    done: bool,
}

impl<'a> Output<'a> {
    fn new(opts: &'a LogOptions, sink: &'a mut dyn LogSink) -> Self {
        Output {
            opts,
            sink,
            buf: Vec::new(),
            pending: Vec::new(),
            pending_time: None,
            written: 0,
            done: false,
        }
    }

    /// Reads every complete line available; false once output must stop.
    fn pump(&mut self, reader: &mut BufReader<File>, path: &Path) -> Result<bool, ReadError> {
        let mut raw = Vec::new();
        loop {
            if self.done {
                return Ok(false);
            }
            raw.clear();
            let start = reader.stream_position().map_err(io_err(path))?;
            let n = reader.read_until(b'\n', &mut raw).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            if raw.last() != Some(&b'\n') {
                // Half-written: read it again once the writer finishes it.
                reader.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
                break;
            }
            self.line(&raw[..raw.len() - 1]);
            if self.buf.len() >= CHUNK {
                self.flush();
            }
        }
        Ok(!self.done)
    }

    fn line(&mut self, raw: &[u8]) {
        let Some(line) = format::parse(raw) else {
            tracing::debug!(
                line = %String::from_utf8_lossy(raw),
                "skipping a malformed log line"
            );
            return;
        };
        if self.pending_time.is_none() {
            self.pending_time = Some(line.time.to_string());
        }
        self.pending.extend_from_slice(line.text);
        if !line.partial {
            self.emit(true);
        }
    }

    /// Writes the joined line (with its newline when it is complete).
    fn emit(&mut self, complete: bool) {
        let time = self.pending_time.take().unwrap_or_default();
        let text = std::mem::take(&mut self.pending);
        if let Some(since) = self.opts.since {
            let when: Option<jiff::Timestamp> = time.parse().ok();
            if when.is_some_and(|t| t < since) {
                return;
            }
        }
        let mut line = Vec::with_capacity(text.len() + time.len() + 2);
        if self.opts.timestamps {
            line.extend_from_slice(time.as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(&text);
        if complete {
            line.push(b'\n');
        }
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written) as usize;
            if line.len() >= room {
                line.truncate(room);
                self.done = true;
            }
        }
        self.written += line.len() as u64;
        self.buf.extend_from_slice(&line);
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            if !self.sink.write(&self.buf) {
                self.done = true;
            }
            self.buf.clear();
        }
    }

    /// The end of the log: a line still partial is shown as it is.
    fn finish(&mut self) {
        if !self.done && self.pending_time.is_some() {
            self.emit(false);
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::logs::format::{encode, Stream};

    /// Waits up to `deadline` for `cond`, polling.
    fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn t(sec: u32) -> String {
        format!("2026-01-01T00:00:{sec:02}.000000000Z")
    }

    fn lines(entries: &[(u32, bool, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (sec, partial, text) in entries {
            encode(
                &mut out,
                &t(*sec),
                Stream::Stdout,
                *partial,
                text.as_bytes(),
            );
        }
        out
    }

    fn read(path: &Path, opts: &LogOptions) -> String {
        let mut out = Vec::new();
        read_log(path, opts, &mut out).expect("read");
        String::from_utf8(out).expect("utf-8")
    }

    /// Three files: `0.log.2` (oldest), `0.log.1`, `0.log`.
    fn rotated_set(dir: &Path) -> PathBuf {
        let log = dir.join("0.log");
        std::fs::write(
            rotated_log_path(&log, 2),
            lines(&[(1, false, "one"), (2, true, "tw")]),
        )
        .expect("write");
        std::fs::write(
            rotated_log_path(&log, 1),
            lines(&[(2, false, "o"), (3, false, "three")]),
        )
        .expect("write");
        std::fs::write(&log, lines(&[(4, false, "four"), (5, false, "five")])).expect("write");
        log
    }

    #[test]
    fn reads_across_rotation_joining_partials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = rotated_set(dir.path());
        assert_eq!(
            read(&log, &LogOptions::default()),
            "one\ntwo\nthree\nfour\nfive\n"
        );
    }

    #[test]
    fn tail_counts_joined_lines_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = rotated_set(dir.path());
        let tail = |n| {
            read(
                &log,
                &LogOptions {
                    tail_lines: Some(n),
                    ..Default::default()
                },
            )
        };
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "five\n");
        assert_eq!(tail(2), "four\nfive\n");
        assert_eq!(tail(3), "three\nfour\nfive\n");
        // "two" spans two files: its first fragment is where the line starts.
        assert_eq!(tail(4), "two\nthree\nfour\nfive\n");
        assert_eq!(tail(100), "one\ntwo\nthree\nfour\nfive\n");
    }

    #[test]
    fn tail_reads_blocks_from_the_end_of_a_large_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        let long = "x".repeat(1000);
        let mut data = Vec::new();
        for i in 0..500 {
            encode(
                &mut data,
                &t(i % 60),
                Stream::Stderr,
                false,
                format!("{i} {long}").as_bytes(),
            );
        }
        // A half-written line at the end is not a line yet.
        data.extend_from_slice(t(59).as_bytes());
        std::fs::write(&log, &data).expect("write");
        let out = read(
            &log,
            &LogOptions {
                tail_lines: Some(70),
                ..Default::default()
            },
        );
        let got: Vec<&str> = out
            .lines()
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let want: Vec<String> = (430..500).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn since_timestamps_and_limit_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = rotated_set(dir.path());
        let since: jiff::Timestamp = t(3).parse().expect("time");
        assert_eq!(
            read(
                &log,
                &LogOptions {
                    since: Some(since),
                    timestamps: true,
                    ..Default::default()
                }
            ),
            format!("{} three\n{} four\n{} five\n", t(3), t(4), t(5))
        );
        assert_eq!(
            read(
                &log,
                &LogOptions {
                    limit_bytes: Some(6),
                    ..Default::default()
                }
            ),
            "one\ntw"
        );
    }

    /// A sink another thread can watch.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    impl LogSink for Shared {
        fn write(&mut self, bytes: &[u8]) -> bool {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            true
        }
    }

    #[test]
    fn follow_streams_appends_across_a_rotation_until_the_exited_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("3.log");
        std::fs::write(&log, lines(&[(1, false, "first")])).expect("write");
        let sink = Shared::default();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let reader = {
            let (log, mut sink) = (log.clone(), sink.clone());
            std::thread::spawn(move || {
                let opts = LogOptions {
                    follow: true,
                    ..Default::default()
                };
                let r = read_log(&log, &opts, &mut sink);
                let _ = done_tx.send(());
                r
            })
        };
        let deadline = Duration::from_secs(10);
        assert!(wait_until(deadline, || sink.text() == "first\n"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        f.write_all(&lines(&[(2, true, "sec")])).expect("append");
        f.write_all(&lines(&[(2, false, "ond")])).expect("append");
        drop(f);
        assert!(wait_until(deadline, || sink.text() == "first\nsecond\n"));
        std::fs::rename(&log, rotated_log_path(&log, 1)).expect("rotate");
        std::fs::write(&log, lines(&[(3, false, "third")])).expect("write");
        assert!(wait_until(deadline, || sink.text() == "first\nsecond\nthird\n"));
        assert!(done_rx.try_recv().is_err(), "still following");
        std::fs::write(exited_marker_path(&log), b"").expect("marker");
        done_rx.recv_timeout(deadline).expect("follow ends");
        reader.join().expect("join").expect("read");
        assert_eq!(sink.text(), "first\nsecond\nthird\n");
    }

    #[test]
    fn a_missing_log_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_log(
            &dir.path().join("0.log"),
            &LogOptions::default(),
            &mut Vec::new(),
        );
        assert!(matches!(err, Err(ReadError::NotFound(_))));
    }
}
