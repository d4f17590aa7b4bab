//! Certificates written as DER by hand: rcgen keeps one value per attribute type in a subject,
//! and a Kubernetes user's groups are several `O=` attributes (minted users, signed CSRs).

use rcgen::{KeyPair, PublicKeyData, SigningKey};

/// OIDs used below.
const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
pub const CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

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
    let mut subject = vec![attribute(COMMON_NAME, user)];
    subject.extend(groups.iter().map(|g| attribute(ORGANIZATION, g)));
    // digitalSignature (bit 0) and keyEncipherment (bit 2).
    let extensions = vec![
        key_usage_extension(&[0, 2]).unwrap_or_default(),
        ext_key_usage_extension(&[CLIENT_AUTH]),
    ];
    signed_certificate(
        ca_key,
        issuer_name,
        &Issued {
            subject_der: &seq(&subject),
            public_key_der: &subject_key.subject_public_key_info(),
            not_before: now - chrono::Duration::days(1),
            not_after: now + chrono::Duration::days(days),
            extensions,
        },
    )
}

/// What a certificate says about its holder.
pub struct Issued<'a> {
    /// The subject Name (DER).
    pub subject_der: &'a [u8],
    /// The holder's SubjectPublicKeyInfo (DER).
    pub public_key_der: &'a [u8],
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// Encoded extensions (see the `*_extension` builders); basicConstraints CA=false is
    /// always added.
    pub extensions: Vec<Vec<u8>>,
}

/// keyUsage (critical) with the given bit numbers (0 digitalSignature … 8 decipherOnly);
/// None when no bit is set.
pub fn key_usage_extension(bits: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = [0u8; 2];
    for b in bits.iter().filter(|b| **b < 16) {
        bytes[usize::from(b / 8)] |= 0x80 >> (b % 8);
    }
    let used = if bytes[1] != 0 { 2 } else { 1 };
    let last = bytes[used - 1];
    if last == 0 {
        return None;
    }
    let mut content = vec![last.trailing_zeros() as u8];
    content.extend_from_slice(&bytes[..used]);
    Some(extension(KEY_USAGE, true, tlv(0x03, &content)))
}

/// extendedKeyUsage with the given purpose OIDs.
pub fn ext_key_usage_extension(purposes: &[&[u64]]) -> Vec<u8> {
    let oids: Vec<Vec<u8>> = purposes.iter().map(|p| oid(p)).collect();
    extension(EXT_KEY_USAGE, false, seq(&oids))
}

/// subjectAltName with an already encoded value (copied from a request).
pub fn subject_alt_name_extension(value: &[u8]) -> Vec<u8> {
    extension(SUBJECT_ALT_NAME, false, value.to_vec())
}

/// Sign a certificate for `issued` with the CA whose subject is `issuer_name` (raw DER) and
/// key `ca_key` (ECDSA P-256, as capstan generates it).
pub fn signed_certificate(
    ca_key: &KeyPair,
    issuer_name: &[u8],
    issued: &Issued<'_>,
) -> Result<Vec<u8>, rcgen::Error> {
    if ca_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(rcgen::Error::UnsupportedSignatureAlgorithm);
    }
    let mut serial: [u8; 16] = rand::RngExt::random(&mut rand::rng());
    serial[0] &= 0x7f;
    let algorithm = seq(&[oid(ECDSA_WITH_SHA256)]);
    let mut extensions: Vec<Vec<u8>> = issued
        .extensions
        .iter()
        .filter(|e| !e.is_empty())
        .cloned()
        .collect();
    extensions.push(extension(BASIC_CONSTRAINTS, true, seq(&[])));
    let tbs = seq(&[
        tlv(0xa0, &integer(&[2])),
        integer(&serial),
        algorithm.clone(),
        issuer_name.to_vec(),
        seq(&[time(issued.not_before), time(issued.not_after)]),
        issued.subject_der.to_vec(),
        issued.public_key_der.to_vec(),
        tlv(0xa3, &seq(&extensions)),
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
        // digitalSignature + keyEncipherment: 5 unused bits, 0b1010_0000.
        let ku = key_usage_extension(&[0, 2]).unwrap();
        assert_eq!(ku[ku.len() - 4..], [0x03, 0x02, 0x05, 0xa0]);
        assert_eq!(key_usage_extension(&[]), None);
    }
}
