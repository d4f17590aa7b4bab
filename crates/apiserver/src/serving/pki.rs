//! The cluster's certificates: a CA and a serving certificate generated into the data dir
//! on first start (rcgen, ring), loaded on later starts, and the rustls config built on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("loading certificates: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0} holds no usable PEM data")]
    BadPem(PathBuf),
    #[error("verifying client certificates: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// What a client needs to trust the server, and the server's TLS configuration.
pub struct Pki {
    pub ca_pem: String,
    /// The CA's key: an in-process node agent issues its kubelet serving certificate with it.
    pub ca_key_pem: String,
    pub tls: Arc<rustls::ServerConfig>,
    /// Who a connection's client certificate names (checked against the CA per connection).
    pub client_certs: Arc<crate::serving::client_cert::LenientClientVerifier>,
    /// The client certificate the API server presents to kubelets (`pods/log`, later exec).
    pub kubelet_client: ClientCert,
}

/// A certificate and its key (PEM).
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The API server's identity towards kubelets: `system:masters`, as kubeadm issues
/// `apiserver-kubelet-client`, so a kubelet authorising by group lets it read logs.
const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";
const KUBELET_CLIENT_ORG: &str = "system:masters";

/// The kubelet client certificate in `dir`, issued from the CA when missing (or when the CA
/// was replaced: `fresh_ca`).
fn kubelet_client_cert(
    dir: &Path,
    ca_crt: &Path,
    ca_key: &Path,
    fresh_ca: bool,
) -> Result<ClientCert, PkiError> {
    let (crt, key) = (
        dir.join("kubelet-client.crt"),
        dir.join("kubelet-client.key"),
    );
    if fresh_ca || !(crt.exists() && key.exists()) {
        let ca_key_pair = KeyPair::from_pem(&read(ca_key)?)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&read(ca_crt)?, ca_key_pair)?;
        let key_pair = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, KUBELET_CLIENT_CN);
        params
            .distinguished_name
            .push(DnType::OrganizationName, KUBELET_CLIENT_ORG);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.signed_by(&key_pair, &issuer)?;
        write_private(&key, &key_pair.serialize_pem())?;
        write_private(&crt, &cert.pem())?;
    }
    Ok(ClientCert {
        cert_pem: read(&crt)?,
        key_pem: read(&key)?,
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a file readable only by its owner.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Unchanged contents need no write: a restart on a full disk must not fail here.
    if std::fs::read(path).is_ok_and(|have| have == contents.as_bytes()) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // Leave no half-written file behind (a full disk, say).
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Load the CA and serving certificate from `dir`, generating them on first use.
/// `hosts` are the serving certificate's names (DNS names or IP addresses).
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (ca_crt, ca_key, crt, key) = (
        dir.join("ca.crt"),
        dir.join("ca.key"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    let fresh_ca = !(ca_crt.exists() && ca_key.exists());
    if fresh_ca {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "capstan-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_crt, &cert.pem())?;
        // A new CA invalidates any old serving certificate.
        let _ = std::fs::remove_file(&crt);
    }
    // The names the serving certificate carries, as issued; a different wanted set (a new
    // --tls-san, another listen address) re-issues it from the same CA.
    let names_file = dir.join("server.names");
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
    ];
    names.extend(hosts.iter().filter(|h| !h.is_empty()).cloned());
    names.sort();
    names.dedup();
    let wanted = names.join("\n");
    let issued = std::fs::read_to_string(&names_file).unwrap_or_default();
    if !(crt.exists() && key.exists()) || issued.trim() != wanted {
        let ca_key_pair = KeyPair::from_pem(&read(&ca_key)?)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&read(&ca_crt)?, ca_key_pair)?;
        let key_pair = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "capstan-apiserver");
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.try_into()?),
                });
        }
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.signed_by(&key_pair, &issuer)?;
        write_private(&key, &key_pair.serialize_pem())?;
        write_private(&crt, &cert.pem())?;
        write_private(&names_file, &wanted)?;
    }
    let chain: Vec<_> = rustls_pemfile::certs(&mut read(&crt)?.as_bytes())
        .filter_map(|c| c.ok())
        .collect();
    if chain.is_empty() {
        return Err(PkiError::BadPem(crt));
    }
    let private = rustls_pemfile::private_key(&mut read(&key)?.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| PkiError::BadPem(key.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are asked for, not required: one chained to the cluster CA
    // authenticates its user (serving::client_cert); tokens still work without one.
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut read(&ca_crt)?.as_bytes()).filter_map(|c| c.ok()) {
        roots.add(ca)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let client_certs = Arc::new(crate::serving::client_cert::LenientClientVerifier::new(
        verifier,
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_certs.clone())
        .with_single_cert(chain, private)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let kubelet_client = kubelet_client_cert(dir, &ca_crt, &ca_key, fresh_ca)?;
    Ok(Pki {
        ca_pem: read(&ca_crt)?,
        ca_key_pem: read(&ca_key)?,
        tls: Arc::new(tls),
        client_certs,
        kubelet_client,
    })
}

/// A client certificate for `user` in `groups` (CN and one O each), signed by the CA in
/// `dir`, valid for a year: what `capstan kubeconfig --user` hands out.
pub fn issue_client_cert(
    dir: &Path,
    user: &str,
    groups: &[String],
) -> Result<ClientCert, PkiError> {
    issue_client_cert_with(
        &read(&dir.join("ca.crt"))?,
        &read(&dir.join("ca.key"))?,
        user,
        groups,
    )
}

/// `issue_client_cert` from a CA given as PEM.
pub fn issue_client_cert_with(
    ca_pem: &str,
    ca_key_pem: &str,
    user: &str,
    groups: &[String],
) -> Result<ClientCert, PkiError> {
    let ca_der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .find_map(|c| c.ok())
        .ok_or_else(|| PkiError::BadPem(PathBuf::from("ca.crt")))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref())
        .map_err(|_| PkiError::BadPem(PathBuf::from("ca.crt")))?;
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let key_pair = KeyPair::generate()?;
    let der = crate::serving::client_cert_der::client_certificate(
        &ca_key,
        ca.subject().as_raw(),
        &key_pair,
        user,
        groups,
        365,
    )?;
    Ok(ClientCert {
        cert_pem: pem_block("CERTIFICATE", &der),
        key_pem: key_pair.serialize_pem(),
    })
}

/// kubeadm's `--discovery-token-ca-cert-hash` of a CA (PEM): `sha256:` and the hex SHA-256 of
/// its SubjectPublicKeyInfo, so a joining node can pin the CA a token's discovery hands it.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, PkiError> {
    let bad = || PkiError::BadPem(PathBuf::from("the CA certificate"));
    let der = pem_certs(ca_pem)?.into_iter().next().ok_or_else(bad)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| bad())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The DER certificates in a PEM bundle (none is an error).
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let bad = || PkiError::BadPem(PathBuf::from("the certificate bundle"));
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.map(|d| d.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// A new key (ECDSA P-256) and a PEM certificate request for `user` in `groups` (CN and one
/// O each), as a kubelet files for its client certificate: (request PEM, key PEM).
pub fn client_csr(user: &str, groups: &[String]) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    for g in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, g.as_str());
    }
    params.distinguished_name.push(DnType::CommonName, user);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// PEM armour, 64 columns.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A throwaway CA (certificate PEM, key PEM) for tests.
#[cfg(test)]
pub fn test_ca() -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}
