//! The CRI log line: `2016-10-06T00:17:09.669794202Z stdout F text`. `F` ends a line, `P` is a
//! partial line (a long line split, or output without a newline yet).

use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed line (`text` without the trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The timestamp as written (RFC 3339 with nanoseconds, UTC).
    pub time: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub text: &'a [u8],
}

/// `time` formatted as the CRI line wants it.
pub fn timestamp(time: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // Fixed 9 fraction digits keep the lines sortable as text.
    format!("{ts:.9}")
}

/// Appends one line to `out`: `text` must not contain a newline.
pub fn encode(out: &mut Vec<u8>, time: &str, stream: Stream, partial: bool, text: &[u8]) {
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Parses one line (without its newline); None for a malformed one.
pub fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or(b"");
    Some(Line {
        time,
        stream,
        partial,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let mut out = Vec::new();
        let t = timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::new(5, 7));
        assert_eq!(t, "1970-01-01T00:00:05.000000007Z");
        encode(&mut out, &t, Stream::Stderr, true, b"a b c");
        assert_eq!(out, b"1970-01-01T00:00:05.000000007Z stderr P a b c\n");
        let line = parse(&out[..out.len() - 1]).expect("parses");
        assert_eq!(line.stream, Stream::Stderr);
        assert!(line.partial);
        assert_eq!(line.text, b"a b c");
        assert_eq!(parse(b"nonsense"), None);
    }
}
