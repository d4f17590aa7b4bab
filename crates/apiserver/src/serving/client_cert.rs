//! Client-certificate authentication, as upstream's x509 authenticator: a certificate that
//! chains to the cluster CA names the user (CN) and its groups (O); any other is a 401 (the
//! handshake takes it, so the refusal is a Status rather than a TLS alert).

use std::sync::Arc;

use crate::serving::user_info::{User, UserInfo};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientCertError {
    #[error("the client certificate could not be parsed: {0}")]
    Unparsable(String),
    #[error("the client certificate's common name is empty")]
    NoCommonName,
    #[error("the client certificate is not signed by the cluster CA: {0}")]
    Untrusted(String),
}

/// The TLS layer's client-certificate check: the handshake proves the client holds the
/// certificate's key (the inner verifier's signature checks), but a chain the cluster CA
/// does not sign is let through so authentication can answer it with upstream's 401;
/// `identity` then verifies the chain with the same inner verifier.
#[derive(Debug)]
pub struct LenientClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

impl LenientClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        LenientClientVerifier { inner }
    }

    /// The identity of a connection whose client presented `chain` (leaf first).
    pub fn identity(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCertIdentity> {
        let (leaf, intermediates) = chain.split_first()?;
        let verified = self
            .inner
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| ClientCertError::Untrusted(e.to_string()));
        Some(ClientCertIdentity(
            verified.and_then(|_| user_from_der(leaf.as_ref())),
        ))
    }
}

impl ClientCertVerifier for LenientClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The identity of a connection that presented a verified client certificate; put into
/// every request's extensions on that connection.
#[derive(Debug, Clone)]
pub struct ClientCertIdentity(pub Result<User, ClientCertError>);

/// The user a verified certificate (DER) names: CN the name, each O a group, plus
/// `system:authenticated` as upstream's authenticator adds it.
pub fn user_from_der(der: &[u8]) -> Result<User, ClientCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| ClientCertError::Unparsable(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(ClientCertError::NoCommonName);
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(User(Arc::new(UserInfo {
        username: name,
        groups,
        ..UserInfo::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_and_organizations_become_user_and_groups() {
        let ca = crate::serving::pki::test_ca();
        let cert = crate::serving::pki::issue_client_cert_with(
            &ca.0,
            &ca.1,
            "alice",
            &["dev".to_string(), "ops".to_string()],
        )
        .unwrap();
        let der = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let user = user_from_der(der.as_ref()).unwrap();
        assert_eq!(user.0.username, "alice");
        assert_eq!(user.0.groups, ["dev", "ops", "system:authenticated"]);
        // The TLS layer's verifier accepts it as a client certificate from that CA.
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
