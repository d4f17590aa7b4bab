//! The kubelet endpoint's TLS: a serving certificate issued from the cluster CA at start
//! (names: the node, its InternalIP, loopback), and client certificates required from it too.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::KubeletTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("issuing the kubelet serving certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the cluster CA certificate holds no usable PEM data")]
    BadCa,
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// The server config: our certificate, and only clients whose certificate the CA signed.
pub fn server_config(
    tls: &KubeletTls,
    node_name: &str,
    addresses: &[IpAddr],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca_key = KeyPair::from_pem(&tls.ca_key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&tls.ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node_name}@kubelet"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
        .subject_alt_names
        .push(SanType::DnsName(node_name.try_into()?));
    let mut ips: Vec<IpAddr> = addresses.to_vec();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    ips.sort();
    ips.dedup();
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    let cert = params.signed_by(&key, &issuer)?;

    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut tls.ca_cert_pem.as_bytes()) {
        let ca = ca.map_err(|_| TlsError::BadCa)?;
        roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::BadCa);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
