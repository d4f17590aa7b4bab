//! Content digests: validating `sha256:<hex>` strings and hashing bytes, files and streams,
//! so every blob the store keeps is checked against the name it is stored under.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The hex part of `sha256:<64 lowercase hex>`; other algorithms are refused (every registry
/// and archive format in use writes sha256).
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?} is not sha256:<hex>"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not sha256:<64 lowercase hex>"
        ));
    }
    Ok(hex)
}

pub(crate) fn of_bytes(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Streams `r` into `w`, returning the sha256 digest and length of what went through.
pub(crate) fn copy_hashing(r: &mut impl Read, w: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

pub(crate) fn of_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    copy_hashing(&mut f, &mut io::sink()).map(|(d, _)| d)
}

/// A reader that hashes everything read through it (a layer's uncompressed stream, checked
/// against its diff id once the tar is consumed).
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left (tar padding after the end marker) and returns the digest.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_sha256_digests() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(sha256_hex(&ok), Ok(&ok[7..]));
        assert!(sha256_hex("sha256:AB").is_err());
        assert!(sha256_hex(&format!("sha256:{}", "AB".repeat(32))).is_err());
        assert!(sha256_hex(&format!("sha512:{}", "ab".repeat(32))).is_err());
        assert!(sha256_hex(&"ab".repeat(32)).is_err());
    }

    #[test]
    fn hashes_streams_like_bytes() {
        let data = b"capstan".repeat(100_000);
        let (d, n) = copy_hashing(&mut &data[..], &mut io::sink()).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, of_bytes(&data));
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), d);
        assert_eq!(
            of_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
