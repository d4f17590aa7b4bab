//! A CertificateSigningRequest's `spec.request`: the PEM `CERTIFICATE REQUEST` decoded, its
//! self-signature checked, and what the signers and approvers look at (subject, SANs, key).

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Why a request cannot be used, in Go's `crypto/x509` words where upstream shows them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("x509: malformed certificate request: {0}")]
    Malformed(String),
    #[error("x509: ECDSA verification failure")]
    BadSignature,
}

/// What a parsed request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedRequest {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub email_addresses: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
    /// The subject Name exactly as the requester encoded it (DER), copied into the
    /// certificate so several `O=` attributes survive.
    pub subject_der: Vec<u8>,
    /// The requester's SubjectPublicKeyInfo (DER).
    pub public_key_der: Vec<u8>,
    /// The raw value of the requested subjectAltName extension, copied into the certificate.
    pub san_extension: Option<Vec<u8>>,
}

/// The DER inside the first PEM block, which must be a `CERTIFICATE REQUEST`.
fn pem_der(pem: &[u8]) -> Result<Vec<u8>, RequestError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| RequestError::NotPem)?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(RequestError::NotPem);
    }
    Ok(block.contents)
}

/// Parse `pem` (the decoded bytes of `spec.request`) and verify its signature, as
/// upstream's validation does on create.
pub fn parse(pem: &[u8]) -> Result<ParsedRequest, RequestError> {
    let der = pem_der(pem)?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| RequestError::Malformed(e.to_string()))?;
    csr.verify_signature()
        .map_err(|_| RequestError::BadSignature)?;
    let info = &csr.certification_request_info;
    let subject = &info.subject;
    let text =
        |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().map(str::to_string).ok();
    let mut out = ParsedRequest {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(text)
            .unwrap_or_default(),
        organizations: subject.iter_organization().filter_map(text).collect(),
        subject_der: subject.as_raw().to_vec(),
        public_key_der: info.subject_pki.raw.to_vec(),
        ..ParsedRequest::default()
    };
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
                continue;
            };
            out.san_extension = Some(ext.value.to_vec());
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(n) => out.dns_names.push(n.to_string()),
                    GeneralName::RFC822Name(n) => out.email_addresses.push(n.to_string()),
                    GeneralName::URI(n) => out.uris.push(n.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// `spec.request` as stored (base64 of the PEM) decoded to the PEM bytes.
pub fn decode_field(b64: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Every key usage upstream knows (`certificates.k8s.io/v1` KeyUsage), sorted as upstream
/// lists them in a NotSupported error.
pub const KNOWN_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A request for `cn` in `orgs` with `dns` SANs, made with rcgen.
    pub fn request_pem(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_request_is_parsed_and_its_signature_checked() {
        let pem = request_pem("alice", &["dev"], &["a.example"]);
        let got = parse(pem.as_bytes()).unwrap();
        assert_eq!(got.common_name, "alice");
        assert_eq!(got.organizations, ["dev"]);
        assert_eq!(got.dns_names, ["a.example"]);
        assert!(got.san_extension.is_some());
        assert_eq!(
            parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(RequestError::NotPem)
        );
        assert_eq!(parse(b"junk"), Err(RequestError::NotPem));
    }
}
