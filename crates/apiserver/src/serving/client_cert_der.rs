//! Client certificates written as DER by hand: rcgen keeps one value per attribute type in a
//! subject, and a Kubernetes user's groups are several `O=` attributes.

use rcgen::{KeyPair, PublicKeyData, SigningKey};

/// OIDs used below.
const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut encode = |mut v: u64| {
        let mut chunk = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    };
    if let [a, b, rest @ ..] = arcs {
        encode(a * 40 + b);
        for v in rest {
            encode(*v);
        }
    }
    tlv(0x06, &body)
}

/// A non-negative INTEGER from big-endian bytes.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    if b.first().is_none_or(|f| f & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

fn attribute(kind: &[u64], value: &str) -> Vec<u8> {
    set(&[seq(&[oid(kind), tlv(0x0c, value.as_bytes())])])
}

/// RFC 5280 time: UTCTime before 2050, GeneralizedTime from then on.
fn time(t: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    use chrono::Datelike;
    if t.year() < 2050 {
        tlv(0x17, t.format("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        tlv(0x18, t.format("%Y%m%d%H%M%SZ").to_string().as_bytes())
    }
}

fn extension(id: &[u64], critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(tlv(0x01, &[0xff]));
    }
    parts.push(tlv(0x04, &value));
    seq(&parts)
}

/// The DER of a client certificate for `subject_key` naming `user` (CN) and `groups` (one
/// O each), valid from yesterday (a client whose clock is behind still accepts it) for
/// `days`, issued by the CA whose subject is `issuer_name` (raw DER) and key `ca_key`
/// (ECDSA P-256, as capstan generates it).
pub fn client_certificate(
    ca_key: &KeyPair,
    issuer_name: &[u8],
    subject_key: &KeyPair,
    user: &str,
    groups: &[String],
    days: i64,
) -> Result<Vec<u8>, rcgen::Error> {
    let now = chrono::Utc::now();
    let not_before = now - chrono::Duration::days(1);
    let not_after = now + chrono::Duration::days(days);
    let serial: [u8; 16] = rand::RngExt::random(&mut rand::rng());
    if ca_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(rcgen::Error::UnsupportedSignatureAlgorithm);
    }
    let algorithm = seq(&[oid(ECDSA_WITH_SHA256)]);
    let mut subject = vec![attribute(COMMON_NAME, user)];
    subject.extend(groups.iter().map(|g| attribute(ORGANIZATION, g)));
    // digitalSignature (bit 0) and keyEncipherment (bit 2): 0b1010_0000, 5 unused bits.
    let key_usage = tlv(0x03, &[0x05, 0xa0]);
    let extensions = seq(&[
        extension(KEY_USAGE, true, key_usage),
        extension(EXT_KEY_USAGE, false, seq(&[oid(CLIENT_AUTH)])),
        extension(BASIC_CONSTRAINTS, true, seq(&[])),
    ]);
    let mut serial = serial;
    serial[0] &= 0x7f;
    let tbs = seq(&[
        tlv(0xa0, &integer(&[2])),
        integer(&serial),
        algorithm.clone(),
        issuer_name.to_vec(),
        seq(&[time(not_before), time(not_after)]),
        seq(&subject),
        subject_key.subject_public_key_info(),
        tlv(0xa3, &extensions),
    ]);
    let signature = ca_key.sign(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend(signature);
    Ok(seq(&[tbs, algorithm, tlv(0x03, &bits)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_and_lengths_encode_as_der() {
        assert_eq!(oid(COMMON_NAME), vec![0x06, 0x03, 0x55, 0x04, 0x03]);
        assert_eq!(
            oid(ECDSA_WITH_SHA256),
            vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(tlv(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0, 0, 5]), vec![0x02, 0x01, 0x05]);
    }
}
