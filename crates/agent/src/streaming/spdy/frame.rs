//! SPDY/3.1 frames as bytes: the eight frame types kubectl's streams use, parsed from a
//! buffer with bounded sizes (header blocks stay compressed here; `header_block` owns zlib).

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// Control frame length field is 24 bits; we refuse control frames larger than this (a
/// SYN_STREAM's compressed headers are a few hundred bytes).
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// Data frames may carry up to the protocol's 24-bit maximum; Go's writers send 32 KiB.
pub const MAX_DATA_FRAME: usize = (1 << 24) - 1;
/// A frame header is 8 bytes for both kinds.
pub const HEADER_LEN: usize = 8;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        /// Compressed header block.
        headers: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value).
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define: ignored, as the spec says.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("a SPDY {kind} frame of {len} bytes is larger than the {max} byte limit")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("a SPDY {0} frame is malformed")]
    Malformed(&'static str),
}

/// Splits one frame off the front of `buf`; `Ok(None)` when more bytes are needed. A frame
/// larger than its limit is an error as soon as its header is in, before its body is read.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let control = buf[0] & 0x80 != 0;
    let flags = buf[4];
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    let (kind_name, max) = if control {
        ("control", MAX_CONTROL_FRAME)
    } else {
        ("data", MAX_DATA_FRAME)
    };
    if len > max {
        return Err(FrameError::TooLarge {
            kind: kind_name,
            len,
            max,
        });
    }
    if control {
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let head = buf.split_to(HEADER_LEN);
    let mut body = buf.split_to(len).freeze();
    if !control {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: body,
        }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |body: &Bytes, n: usize, name: &'static str| {
        if body.len() < n {
            Err(FrameError::Malformed(name))
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need(&body, 10, "SYN_STREAM")?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            let associated_to = body.get_u32() & 0x7fff_ffff;
            let priority = body.get_u8() >> 5;
            let _slot = body.get_u8();
            if stream_id == 0 {
                return Err(FrameError::Malformed("SYN_STREAM"));
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers: body,
            }
        }
        TYPE_SYN_REPLY => {
            need(&body, 4, "SYN_REPLY")?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            Frame::SynReply {
                stream_id,
                flags,
                headers: body,
            }
        }
        TYPE_RST_STREAM => {
            need(&body, 8, "RST_STREAM")?;
            Frame::RstStream {
                stream_id: body.get_u32() & 0x7fff_ffff,
                status: body.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            need(&body, 4, "SETTINGS")?;
            let count = body.get_u32() as usize;
            if body.len() != count.saturating_mul(8) {
                return Err(FrameError::Malformed("SETTINGS"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let word = body.get_u32();
                entries.push(((word >> 24) as u8, word & 0x00ff_ffff, body.get_u32()));
            }
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need(&body, 4, "PING")?;
            Frame::Ping { id: body.get_u32() }
        }
        TYPE_GOAWAY => {
            need(&body, 4, "GOAWAY")?;
            let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
            // SPDY/2 GOAWAYs had no status; accept both.
            let status = if body.len() >= 4 { body.get_u32() } else { 0 };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_HEADERS => {
            need(&body, 4, "HEADERS")?;
            let stream_id = body.get_u32() & 0x7fff_ffff;
            Frame::Headers {
                stream_id,
                flags,
                headers: body,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(&body, 8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream_id: body.get_u32() & 0x7fff_ffff,
                delta: body.get_u32() & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { kind: other },
    };
    Ok(Some(frame))
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    // Lengths we write are bounded by the callers (header blocks, 8-byte bodies).
    let len = (len as u32) & 0x00ff_ffff;
    out.put_slice(&len.to_be_bytes()[1..]);
}

/// Appends the frame's bytes to `out`. Data longer than a frame may carry must be split by
/// the caller (`Frame::Data` bodies come from bounded reads).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers,
        } => {
            control_header(out, TYPE_SYN_STREAM, *flags, 10 + headers.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(associated_to & 0x7fff_ffff);
            out.put_u8((priority & 0x07) << 5);
            out.put_u8(0);
            out.put_slice(headers);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            control_header(out, TYPE_SYN_REPLY, *flags, 4 + headers.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_slice(headers);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for (f, id, value) in entries {
                out.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                out.put_u32(*value);
            }
        }
        Frame::Ping { id } => {
            control_header(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_header(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            control_header(out, TYPE_HEADERS, *flags, 4 + headers.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_slice(headers);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(delta & 0x7fff_ffff);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u8(*flags);
            let len = (data.len().min(MAX_DATA_FRAME) as u32).to_be_bytes();
            out.put_slice(&len[1..]);
            out.put_slice(&data[..data.len().min(MAX_DATA_FRAME)]);
        }
        Frame::Unknown { kind } => control_header(out, *kind, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut out = BytesMut::new();
        encode(&frame, &mut out);
        // Fed byte by byte, the parser waits until the frame is whole.
        let bytes = out.freeze();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let parsed = parse(&mut buf).expect("parses");
            if i + 1 < bytes.len() {
                assert_eq!(parsed, None, "frame complete early at byte {i}");
            } else {
                assert_eq!(parsed, Some(frame.clone()));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: FLAG_FIN,
            headers: Bytes::from_static(b"\x78\xbbabc"),
        });
        round_trip(Frame::SynReply {
            stream_id: 3,
            flags: 0,
            headers: Bytes::from_static(b"xyz"),
        });
        round_trip(Frame::RstStream {
            stream_id: 5,
            status: RST_REFUSED_STREAM,
        });
        round_trip(Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 65536), (1, 4, 100)],
        });
        round_trip(Frame::Ping { id: 0xffff_fffe });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        });
        round_trip(Frame::Headers {
            stream_id: 7,
            flags: 0,
            headers: Bytes::from_static(b"h"),
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        });
        round_trip(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from(vec![7u8; 40_000]),
        });
        round_trip(Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::new(),
        });
    }

    #[test]
    fn oversized_frames_fail_on_their_header() {
        // A control frame announcing 16 MiB: refused with only its 8 header bytes read.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            parse(&mut buf),
            Err(FrameError::TooLarge {
                kind: "control",
                ..
            })
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            // SPDY/2.
            vec![0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
            // SYN_STREAM with a 2-byte body.
            vec![0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0, 0],
            // SYN_STREAM for stream 0.
            vec![
                0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            // SETTINGS claiming 1000 entries in 4 bytes.
            vec![
                0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0, 0, 0x03, 0xe8,
            ],
            // PING with no id.
            vec![0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00],
            // WINDOW_UPDATE too short.
            vec![0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1],
        ];
        for case in cases {
            let mut buf = BytesMut::from(&case[..]);
            assert!(parse(&mut buf).is_err(), "{case:?} parsed");
        }
        // An unknown control type is skipped, not an error.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x01, 9][..]);
        assert_eq!(
            parse(&mut buf).expect("parses"),
            Some(Frame::Unknown { kind: 15 })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of a pseudo-random stream.
        let mut state = 0x2545_f491_u32;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for start in 0..256 {
            let mut buf = BytesMut::from(&bytes[start..]);
            while let Ok(Some(_)) = parse(&mut buf) {}
        }
    }
}
