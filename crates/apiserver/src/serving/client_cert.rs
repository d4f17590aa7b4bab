//! Client-certificate authentication, as upstream's x509 authenticator: a certificate the
//! TLS handshake verified against the cluster CA names the user (CN) and its groups (O).

use std::sync::Arc;

use crate::serving::user_info::{User, UserInfo};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientCertError {
    #[error("the client certificate could not be parsed: {0}")]
    Unparsable(String),
    #[error("the client certificate's common name is empty")]
    NoCommonName,
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
