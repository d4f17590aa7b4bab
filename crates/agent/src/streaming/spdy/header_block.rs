//! SPDY/3 header blocks: name/value pairs, zlib-compressed with the protocol's preset
//! dictionary, one compression context per direction for the whole session.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A decompressed header block larger than this ends the session (kubectl's are ~100 bytes).
pub const MAX_DECOMPRESSED: usize = 64 * 1024;
/// At most this many pairs in one block.
const MAX_PAIRS: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("a SPDY header block does not decompress: {0}")]
    Zlib(String),
    #[error("a SPDY header block is larger than {MAX_DECOMPRESSED} bytes decompressed")]
    TooLarge,
    #[error("a SPDY header block is malformed")]
    Malformed,
}

/// The SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00 section 2.6.10.1): the
/// length-prefixed words, then the raw tail.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept ",
            "Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,",
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=",
            "iso-8859-1,utf-,*,enq=0."
        );
        let mut d = Vec::with_capacity(1500);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Header names as SPDY carries them (lower case); values may hold several, NUL-separated.
pub type Headers = Vec<(String, String)>;

/// Looks a header up by name, case-insensitively.
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub struct Compressor {
    z: Compress,
}

impl Compressor {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Setting a dictionary before any input cannot fail on a fresh zlib stream.
        let _ = z.set_dictionary(dictionary());
        Compressor { z }
    }

    /// The compressed block for `headers`, flushed so the peer can decode it alone.
    pub fn compress(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, HeaderError> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            let n = n.to_ascii_lowercase();
            plain.extend_from_slice(&(n.len() as u32).to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // Done once all input is in and the flush left spare room (zlib had no more).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Decompressor {
    z: Decompress,
}

impl Decompressor {
    pub fn new() -> Self {
        Decompressor {
            z: Decompress::new(true),
        }
    }

    /// The pairs of one block (this context continues from the previous blocks).
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut input = block;
        loop {
            let before = self.z.total_in();
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before) as usize;
            input = &input[used.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= MAX_DECOMPRESSED {
                return Err(HeaderError::TooLarge);
            }
            if used == 0 && out.len() < out.capacity() {
                // No progress with room to spare: the block is truncated.
                return Err(HeaderError::Malformed);
            }
            out.reserve(out.capacity().min(MAX_DECOMPRESSED));
        }
        if out.len() > MAX_DECOMPRESSED {
            return Err(HeaderError::TooLarge);
        }
        parse_pairs(&out)
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_pairs(mut b: &[u8]) -> Result<Headers, HeaderError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderError> {
        if b.len() < n {
            return Err(HeaderError::Malformed);
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn word(b: &mut &[u8]) -> Result<usize, HeaderError> {
        let w = take(b, 4)?;
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    let count = word(&mut b)?;
    if count > MAX_PAIRS {
        return Err(HeaderError::Malformed);
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let n = word(&mut b)?;
        let name = take(&mut b, n)?;
        let v = word(&mut b)?;
        let value = take(&mut b, v)?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if name.is_empty() {
            return Err(HeaderError::Malformed);
        }
        pairs.push((name, String::from_utf8_lossy(value).into_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_protocols() {
        // Length and Adler-32 of the SPDY/3 dictionary (the id zlib puts in the stream).
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for byte in d {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_round_trip_across_one_context() {
        let mut c = Compressor::new();
        let mut d = Decompressor::new();
        let first = c
            .compress(&[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ])
            .expect("compress");
        let second = c
            .compress(&[("streamtype", "data"), ("multi", "a\0b")])
            .expect("compress");
        assert_eq!(
            d.decompress(&first).expect("first"),
            vec![
                ("streamtype".to_string(), "error".to_string()),
                ("port".to_string(), "8080".to_string()),
                ("requestid".to_string(), "0".to_string())
            ]
        );
        let h = d.decompress(&second).expect("second");
        assert_eq!(get(&h, "StreamType"), Some("data"));
        assert_eq!(get(&h, "multi"), Some("a\0b"));
        let empty = c.compress(&[]).expect("empty");
        assert_eq!(d.decompress(&empty).expect("empty"), vec![]);
    }

    #[test]
    fn garbage_and_bombs_are_errors() {
        let mut d = Decompressor::new();
        assert!(d.decompress(b"not zlib at all").is_err());
        // A valid stream whose pair lengths point past the end.
        let mut c = Compressor::new();
        let block = c
            .compress(&[("streamtype", "stdout"), ("x", "y")])
            .expect("compress");
        let mut d = Decompressor::new();
        assert!(d.decompress(&block[..block.len() / 2]).is_err());
        // 1 MiB of one header value compresses to a few KiB but is refused decompressed.
        let big = "x".repeat(1 << 20);
        let mut c = Compressor::new();
        let block = c.compress(&[("big", &big)]).expect("compress");
        let mut d = Decompressor::new();
        assert_eq!(d.decompress(&block), Err(HeaderError::TooLarge));
        // Pair counts and lengths out of bounds.
        assert_eq!(parse_pairs(&[0, 0, 0, 1]), Err(HeaderError::Malformed));
        assert_eq!(
            parse_pairs(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']),
            Err(HeaderError::Malformed)
        );
        assert_eq!(parse_pairs(&[0xff, 0, 0, 0]), Err(HeaderError::Malformed));
    }
}
