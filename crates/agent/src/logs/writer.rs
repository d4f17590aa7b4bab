//! Appending a container's output to its CRI-format log file, rotating it by size: the shim's
//! side of `logs`. Keeps `N.log` plus at most `max_files - 1` older files `N.log.1` (newest) ….

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::format::{self, Stream};

/// A line longer than this is split into `P` pieces (the kubelet's limit too).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("container log {path}: {source}")]
pub struct LogWriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One stream's bytes not yet ended by a newline.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    stdout: Pending,
    stderr: Pending,
}

impl LogWriter {
    /// Opens (appending to) `path`, creating its folder.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> Result<LogWriter, LogWriteError> {
        let err = |source| LogWriteError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = open_append(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            stdout: Pending::default(),
            stderr: Pending::default(),
        })
    }

    /// Appends output read from `stream`: every complete line becomes an `F` line, a line
    /// longer than `MAX_LINE` is written as `P` pieces; the unfinished tail waits for more.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<(), LogWriteError> {
        let pending = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        pending.bytes.extend_from_slice(data);
        let buffered = std::mem::take(&mut pending.bytes);
        let time = format::timestamp(SystemTime::now());
        let mut out = Vec::new();
        let mut rest: &[u8] = &buffered;
        loop {
            match rest.iter().position(|b| *b == b'\n') {
                Some(nl) if nl <= MAX_LINE => {
                    format::encode(&mut out, &time, stream, false, &rest[..nl]);
                    rest = &rest[nl + 1..];
                }
                _ if rest.len() > MAX_LINE => {
                    format::encode(&mut out, &time, stream, true, &rest[..MAX_LINE]);
                    rest = &rest[MAX_LINE..];
                }
                _ => break,
            }
        }
        let tail = rest.to_vec();
        match stream {
            Stream::Stdout => self.stdout.bytes = tail,
            Stream::Stderr => self.stderr.bytes = tail,
        }
        self.append(&out)
    }

    /// Writes what is left of both streams as `P` lines (the container has exited, or its
    /// output stopped mid-line).
    pub fn flush_partial(&mut self) -> Result<(), LogWriteError> {
        let time = format::timestamp(SystemTime::now());
        let mut out = Vec::new();
        for (stream, pending) in [
            (Stream::Stdout, std::mem::take(&mut self.stdout.bytes)),
            (Stream::Stderr, std::mem::take(&mut self.stderr.bytes)),
        ] {
            if !pending.is_empty() {
                format::encode(&mut out, &time, stream, true, &pending);
            }
        }
        self.append(&out)
    }

    /// Writes encoded lines, rotating between lines whenever the next one would take the
    /// file past `max_size` (a single line longer than that still goes in whole).
    fn append(&mut self, out: &[u8]) -> Result<(), LogWriteError> {
        let mut batch_start = 0;
        let mut batch_len = 0u64;
        for line in out.split_inclusive(|b| *b == b'\n') {
            let len = line.len() as u64;
            let size = self.size + batch_len;
            if size > 0 && size + len > self.max_size {
                self.write_all(&out[batch_start..batch_start + batch_len as usize])?;
                batch_start += batch_len as usize;
                batch_len = 0;
                self.rotate()?;
            }
            batch_len += len;
        }
        self.write_all(&out[batch_start..batch_start + batch_len as usize])
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LogWriteError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes).map_err(|source| LogWriteError {
            path: self.path.clone(),
            source,
        })?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `N.log.k` → `N.log.k+1` from the oldest kept down, `N.log` → `N.log.1`, a fresh `N.log`.
    fn rotate(&mut self) -> Result<(), LogWriteError> {
        let err = |source| LogWriteError {
            path: self.path.clone(),
            source,
        };
        let keep_old = self.max_files - 1;
        if keep_old == 0 {
            self.file.set_len(0).map_err(err)?;
            self.size = 0;
            return Ok(());
        }
        let oldest = rotated_path(&self.path, keep_old);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        for k in (1..keep_old).rev() {
            let from = rotated_path(&self.path, k);
            match std::fs::rename(&from, rotated_path(&self.path, k + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1)).map_err(err)?;
        self.file = open_append(&self.path).map_err(err)?;
        self.size = 0;
        tracing::debug!(path = %self.path.display(), "container log rotated");
        Ok(())
    }
}

/// `N.log.k`: the k-th newest rotated file.
pub fn rotated_path(path: &Path, k: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{k}"));
    path.with_file_name(name)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "capstan-logwriter-{name}-{}-{:?}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn lines(path: &Path) -> Vec<(Stream, bool, String)> {
        let text = std::fs::read(path).expect("log file");
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let line = format::parse(l).expect("a CRI line");
                (
                    line.stream,
                    line.partial,
                    String::from_utf8_lossy(line.text).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_are_split_on_newlines_and_tails_wait() {
        let dir = temp_dir("lines");
        let path = dir.join("0.log");
        let mut w = LogWriter::open(&path, 1 << 20, 3).expect("open");
        w.write(Stream::Stdout, b"hello\nwor").expect("write");
        w.write(Stream::Stderr, b"oops\n").expect("write");
        w.write(Stream::Stdout, b"ld\nno newline").expect("write");
        w.flush_partial().expect("flush");
        assert_eq!(
            lines(&path),
            vec![
                (Stream::Stdout, false, "hello".to_string()),
                (Stream::Stderr, false, "oops".to_string()),
                (Stream::Stdout, false, "world".to_string()),
                (Stream::Stdout, true, "no newline".to_string()),
            ]
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn a_long_line_is_written_in_partial_pieces() {
        let dir = temp_dir("long");
        let path = dir.join("0.log");
        let mut w = LogWriter::open(&path, 1 << 20, 3).expect("open");
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        w.write(Stream::Stdout, &long).expect("write");
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert!(got[0].1 && got[0].2.len() == MAX_LINE);
        assert!(!got[1].1 && got[1].2.len() == 10);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("0.log");
        let mut w = LogWriter::open(&path, 200, 3).expect("open");
        for i in 0..50 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .expect("write");
        }
        // Many lines in one read rotate line by line too.
        let many: String = (50..100).map(|i| format!("line {i}\n")).collect();
        w.write(Stream::Stdout, many.as_bytes()).expect("write");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["0.log", "0.log.1", "0.log.2"]);
        for name in &names {
            let size = std::fs::metadata(dir.join(name)).expect("size").len();
            assert!(size <= 200, "{name} is {size} bytes");
        }
        // The newest line is in the live file, older ones in .1 then .2.
        assert!(lines(&path).last().expect("a line").2 == "line 99");
        let newest_rotated = lines(&dir.join("0.log.1"))
            .last()
            .expect("a line")
            .2
            .clone();
        let first_live = lines(&path)[0].2.clone();
        let n = |s: &str| s["line ".len()..].parse::<u32>().expect("number");
        assert_eq!(n(&newest_rotated) + 1, n(&first_live));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
