//! Signing CertificateSigningRequests with the cluster CA: the requested subject and SANs
//! copied as the requester encoded them, the usages turned into keyUsage/extendedKeyUsage.

use rcgen::KeyPair;

use crate::serving::client_cert_der::{self, Issued};
use crate::types::certificates::request::{self, ParsedRequest, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the cluster CA cannot be used: {0}")]
    Ca(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// Backdating, as upstream's signer does, so a peer whose clock is a little behind accepts
/// a fresh certificate.
const BACKDATE: chrono::Duration = chrono::Duration::minutes(5);

/// The cluster CA, ready to sign.
pub struct CaSigner {
    key: KeyPair,
    issuer_name: Vec<u8>,
    ca_not_after: chrono::DateTime<chrono::Utc>,
}

impl CaSigner {
    pub fn new(ca_pem: &str, ca_key_pem: &str) -> Result<Self, SignError> {
        let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .find_map(|c| c.ok())
            .ok_or_else(|| SignError::Ca("no certificate in the CA PEM".into()))?;
        let (_, ca) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| SignError::Ca(e.to_string()))?;
        let ca_not_after = chrono::DateTime::from_timestamp(ca.validity().not_after.timestamp(), 0)
            .ok_or_else(|| SignError::Ca("the CA's notAfter is out of range".into()))?;
        Ok(CaSigner {
            key: KeyPair::from_pem(ca_key_pem).map_err(|e| SignError::Ca(e.to_string()))?,
            issuer_name: ca.subject().as_raw().to_vec(),
            ca_not_after,
        })
    }

    /// A PEM certificate for the request `pem` with `usages`, valid for `lifetime` from
    /// now (never past the CA's own expiry).
    pub fn sign(
        &self,
        pem: &[u8],
        usages: &[String],
        lifetime: std::time::Duration,
    ) -> Result<String, SignError> {
        let req = request::parse(pem)?;
        let now = chrono::Utc::now();
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(365));
        let not_after = (now + lifetime).min(self.ca_not_after);
        let der = client_cert_der::signed_certificate(
            &self.key,
            &self.issuer_name,
            &Issued {
                subject_der: &req.subject_der,
                public_key_der: &req.public_key_der,
                not_before: now - BACKDATE,
                not_after,
                extensions: extensions(&req, usages),
            },
        )?;
        Ok(crate::serving::pki::pem_block("CERTIFICATE", &der))
    }
}

/// upstream's keyUsage bit for a usage name, if it is one.
fn key_usage_bit(usage: &str) -> Option<u8> {
    Some(match usage {
        "signing" | "digital signature" => 0,
        "content commitment" => 1,
        "key encipherment" => 2,
        "data encipherment" => 3,
        "key agreement" => 4,
        "cert sign" => 5,
        "crl sign" => 6,
        "encipher only" => 7,
        "decipher only" => 8,
        _ => return None,
    })
}

/// upstream's extendedKeyUsage OID for a usage name, if it is one.
fn ext_key_usage(usage: &str) -> Option<&'static [u64]> {
    Some(match usage {
        "any" => &[2, 5, 29, 37, 0],
        "server auth" => &[1, 3, 6, 1, 5, 5, 7, 3, 1],
        "client auth" => client_cert_der::CLIENT_AUTH,
        "code signing" => &[1, 3, 6, 1, 5, 5, 7, 3, 3],
        "email protection" | "s/mime" => &[1, 3, 6, 1, 5, 5, 7, 3, 4],
        "ipsec end system" => &[1, 3, 6, 1, 5, 5, 7, 3, 5],
        "ipsec tunnel" => &[1, 3, 6, 1, 5, 5, 7, 3, 6],
        "ipsec user" => &[1, 3, 6, 1, 5, 5, 7, 3, 7],
        "timestamping" => &[1, 3, 6, 1, 5, 5, 7, 3, 8],
        "ocsp signing" => &[1, 3, 6, 1, 5, 5, 7, 3, 9],
        "microsoft sgc" => &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3],
        "netscape sgc" => &[2, 16, 840, 1, 113730, 4, 1],
        _ => return None,
    })
}

fn extensions(req: &ParsedRequest, usages: &[String]) -> Vec<Vec<u8>> {
    let bits: Vec<u8> = usages.iter().filter_map(|u| key_usage_bit(u)).collect();
    let mut ekus: Vec<&[u64]> = Vec::new();
    for e in usages.iter().filter_map(|u| ext_key_usage(u)) {
        if !ekus.contains(&e) {
            ekus.push(e);
        }
    }
    let mut out = Vec::new();
    if let Some(ku) = client_cert_der::key_usage_extension(&bits) {
        out.push(ku);
    }
    if !ekus.is_empty() {
        out.push(client_cert_der::ext_key_usage_extension(&ekus));
    }
    if let Some(san) = &req.san_extension {
        out.push(client_cert_der::subject_alt_name_extension(san));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_keeps_its_subject_and_chains_to_the_ca() {
        let ca = crate::serving::pki::test_ca();
        let signer = CaSigner::new(&ca.0, &ca.1).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n1.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let usages = ["digital signature".to_string(), "client auth".to_string()];
        let cert = signer
            .sign(
                pem.as_bytes(),
                &usages,
                std::time::Duration::from_secs(3600),
            )
            .unwrap();
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let user = crate::serving::client_cert::user_from_der(der.as_ref()).unwrap();
        assert_eq!(user.0.username, "system:node:n1");
        assert_eq!(user.0.groups, ["system:nodes", "system:authenticated"]);
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let life =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        assert!(parsed.subject_alternative_name().unwrap().is_some());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.0.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }
}
