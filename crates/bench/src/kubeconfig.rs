//! Reads a kubeconfig into an `Endpoint`: the server URL, the TLS settings (CA, client
//! certificate, or no verification) and the bearer token, for the current or a named context.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

use crate::error::BenchError;

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct User {
    token: Option<String>,
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_json::Value>,
    auth_provider: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

/// Where and how to reach one API server.
#[derive(Clone)]
pub struct Endpoint {
    /// `https://host:port` (or `http://`), without a trailing slash.
    pub server: String,
    pub host: String,
    pub port: u16,
    /// `None` for plain HTTP.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
}

impl Endpoint {
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))?;
        // YAML into JSON, then the typed config, as kubectl reads it (and one YAML decoder in
        // the binary, into a value, rather than one per type).
        let kc: Kubeconfig = serde_saphyr::from_str::<serde_json::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .map_err(|e| BenchError::Config(format!("parsing {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let ctx_name = context.unwrap_or(&kc.current_context);
        let ctx = find(&kc.contexts, ctx_name, "context")?;
        let cluster = find(&kc.clusters, &ctx.cluster, "cluster")?;
        let user = if ctx.user.is_empty() {
            None
        } else {
            Some(find(&kc.users, &ctx.user, "user")?)
        };
        Self::build(cluster, user, base)
    }

    fn build(cluster: &Cluster, user: Option<&User>, base: &Path) -> Result<Self, BenchError> {
        let server = cluster.server.trim_end_matches('/').to_string();
        let (scheme, rest) = server
            .split_once("://")
            .ok_or_else(|| BenchError::Config(format!("server {server:?} has no scheme")))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        if rest.len() != authority.len() {
            return Err(BenchError::Config(format!(
                "server {server:?}: a path prefix is not supported"
            )));
        }
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            other => return Err(BenchError::Config(format!("unsupported scheme {other:?}"))),
        };
        let (host, port) = split_host_port(authority, default_port)?;
        let authorization = match user {
            Some(u) if u.exec.is_some() || u.auth_provider.is_some() => {
                return Err(BenchError::Config(
                    "exec and auth-provider credentials are not supported; use a token or a client certificate".into(),
                ))
            }
            Some(User { token: Some(t), .. }) => Some(format!("Bearer {}", t.trim())),
            Some(User {
                token_file: Some(f),
                ..
            }) => Some(format!(
                "Bearer {}",
                read_text(&resolve(base, f))?.trim()
            )),
            _ => None,
        };
        let tls = if scheme == "https" {
            let config = tls_config(cluster, user, base)?;
            let name = cluster
                .tls_server_name
                .clone()
                .unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|e| BenchError::Config(format!("server name {name:?}: {e}")))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Endpoint {
            server,
            host,
            port,
            tls,
            authorization,
        })
    }
}

fn find<'a, T>(items: &'a [Named<T>], name: &str, what: &str) -> Result<&'a T, BenchError> {
    items
        .iter()
        .find(|n| n.name == name)
        .map(|n| &n.value)
        .ok_or_else(|| BenchError::Config(format!("kubeconfig has no {what} named {name:?}")))
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), BenchError> {
    let bad = || BenchError::Config(format!("bad server address {authority:?}"));
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => default_port,
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        None => Ok((authority.to_string(), default_port)),
    }
}

fn resolve(base: &Path, file: &str) -> std::path::PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read_text(path: &Path) -> Result<String, BenchError> {
    std::fs::read_to_string(path)
        .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))
}

/// PEM from an inline `*-data` (base64) field or a file path field.
fn pem(
    data: &Option<String>,
    file: &Option<String>,
    base: &Path,
) -> Result<Option<Vec<u8>>, BenchError> {
    if let Some(d) = data {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| BenchError::Config(format!("bad base64 in kubeconfig: {e}")))?;
        return Ok(Some(raw));
    }
    if let Some(f) = file {
        let path = resolve(base, f);
        return std::fs::read(&path)
            .map(Some)
            .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())));
    }
    Ok(None)
}

fn certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, BenchError> {
    let certs = rustls_pemfile::certs(&mut &pem_bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::Config(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(BenchError::Config("no certificate in PEM data".into()));
    }
    Ok(certs)
}

fn tls_config(
    cluster: &Cluster,
    user: Option<&User>,
    base: &Path,
) -> Result<rustls::ClientConfig, BenchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Config(format!("TLS: {e}")))?;
    let builder = if cluster.insecure_skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let ca = pem(
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
            base,
        )?
        .ok_or_else(|| {
            BenchError::Config(
                "the cluster has no certificate-authority(-data) and does not skip verification"
                    .into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&ca)? {
            roots
                .add(c)
                .map_err(|e| BenchError::Config(format!("bad CA certificate: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    let client_cert = match user {
        Some(u) => pem(&u.client_certificate_data, &u.client_certificate, base)?,
        None => None,
    };
    let mut config = match client_cert {
        Some(cert) => {
            let key_pem = user
                .map(|u| pem(&u.client_key_data, &u.client_key, base))
                .transpose()?
                .flatten()
                .ok_or_else(|| BenchError::Config("client certificate without a key".into()))?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(|e| BenchError::Config(format!("bad client key: {e}")))?
                .ok_or_else(|| BenchError::Config("no private key in client key data".into()))?;
            builder
                .with_client_auth_cert(certs(&cert)?, key)
                .map_err(|e| BenchError::Config(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    // One HTTP/1.1 connection per simulated client keeps the tool's overhead predictable.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `insecure-skip-tls-verify: true`: accept any server certificate, still check signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn token_context_and_address_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "kc",
            "apiVersion: v1
clusters:
- name: a
  cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}
- name: b
  cluster: {server: 'http://[::1]:8080/'}
users:
- name: u
  user: {token: secret}
- name: f
  user: {token-file: tok}
contexts:
- name: one
  context: {cluster: a, user: u}
- name: two
  context: {cluster: b, user: f}
current-context: one
",
        );
        write(dir.path(), "tok", "from-file\n");
        let e = Endpoint::from_kubeconfig(&path, None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 6443));
        assert!(e.tls.is_some());
        assert_eq!(e.authorization.as_deref(), Some("Bearer secret"));
        let e = Endpoint::from_kubeconfig(&path, Some("two")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8080));
        assert!(e.tls.is_none());
        assert_eq!(e.server, "http://[::1]:8080");
        assert_eq!(e.authorization.as_deref(), Some("Bearer from-file"));
        let err = Endpoint::from_kubeconfig(&path, Some("three"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no context named \"three\""), "{err}");
    }

    #[test]
    fn client_certificates_inline_or_from_files_are_loaded() {
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["admin".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "client.crt", &cert.pem());
        write(dir.path(), "client.key", &key.serialize_pem());
        write(dir.path(), "ca.crt", &ca.pem());
        let path = write(
            dir.path(),
            "kc",
            &format!(
                "clusters:
- name: a
  cluster: {{server: 'https://localhost:6443', certificate-authority-data: {ca}}}
- name: b
  cluster: {{server: 'https://localhost:6443', certificate-authority: ca.crt}}
users:
- name: inline
  user: {{client-certificate-data: {crt}, client-key-data: {k}}}
- name: files
  user: {{client-certificate: client.crt, client-key: client.key}}
- name: nokey
  user: {{client-certificate: client.crt}}
contexts:
- {{name: inline, context: {{cluster: a, user: inline}}}}
- {{name: files, context: {{cluster: b, user: files}}}}
- {{name: nokey, context: {{cluster: a, user: nokey}}}}
current-context: inline
",
                ca = b64(ca.pem()),
                crt = b64(cert.pem()),
                k = b64(key.serialize_pem()),
            ),
        );
        for ctx in ["inline", "files"] {
            let e = Endpoint::from_kubeconfig(&path, Some(ctx)).unwrap();
            let (config, name) = e.tls.expect("TLS");
            assert!(config.client_auth_cert_resolver.has_certs(), "{ctx}");
            assert_eq!(name.to_str(), "localhost");
            assert_eq!(e.authorization, None);
        }
        let err = Endpoint::from_kubeconfig(&path, Some("nokey"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("without a key"), "{err}");
    }

    #[test]
    fn https_without_a_ca_or_skip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "kc",
            "clusters: [{name: a, cluster: {server: 'https://h'}}]
contexts: [{name: c, context: {cluster: a}}]
current-context: c
",
        );
        let err = Endpoint::from_kubeconfig(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("certificate-authority"), "{err}");
    }
}
