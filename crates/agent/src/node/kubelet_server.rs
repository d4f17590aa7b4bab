//! The kubelet HTTPS endpoint the API server reaches (mutual TLS with the cluster CA):
//! `/healthz`, `/containerLogs/{namespace}/{pod}/{container}` and the streaming paths
//! (`/exec`, `/attach`, `/portforward`, upgraded connections), as upstream's paths.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::container_logs::{container_logs, LogsState};
use crate::streaming::endpoints::{self, StreamingState};

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: Arc<LogsState>, streams: Option<Arc<StreamingState>>) -> Router {
    let logs = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(state);
    let Some(streams) = streams else {
        return logs;
    };
    // GET (WebSocket) and POST (SPDY), as kubectl sends them.
    let streaming = Router::new()
        .route("/exec/{namespace}/{pod}/{container}", any(endpoints::exec))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            any(endpoints::attach),
        )
        .route(
            "/portforward/{namespace}/{pod}",
            any(endpoints::port_forward),
        )
        .with_state(streams);
    logs.merge(streaming)
}

/// Serves until the process ends; each connection on its own task.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "kubelet endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet endpoint: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::node::kubelet_tls::server_config;
    use crate::node::KubeletTls;

    struct Ca {
        tls: KubeletTls,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        let tls = KubeletTls {
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
        };
        let issuer = rcgen::Issuer::from_ca_cert_pem(&tls.ca_cert_pem, key).expect("issuer");
        Ca { tls, issuer }
    }

    /// A client certificate as the API server's: clientAuth, issued by `ca`.
    fn client_cert(ca: &Ca) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca.issuer).expect("client cert");
        (
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// GET /healthz over TLS; the raw response, or the error that ended it.
    async fn healthz(
        port: u16,
        ca: &Ca,
        client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.tls.ca_cert_pem.as_bytes()) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?,
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        tls.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[tokio::test]
    async fn only_clients_with_a_certificate_from_the_cluster_ca_are_served() {
        let cluster = ca("cluster-ca");
        let config = server_config(&cluster.tls, "node-a", &[]).expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("uri"),
        ))
        .expect("client");
        let state = Arc::new(LogsState {
            client,
            pods_root: std::env::temp_dir(),
        });
        let server = tokio::spawn(serve(listener, config, router(state, None)));

        let ok = healthz(port, &cluster, Some(client_cert(&cluster)))
            .await
            .expect("served");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("ok"), "{ok}");

        assert!(healthz(port, &cluster, None).await.is_err());
        let stranger = ca("another-ca");
        assert!(healthz(port, &cluster, Some(client_cert(&stranger)))
            .await
            .is_err());
        server.abort();
    }
}
