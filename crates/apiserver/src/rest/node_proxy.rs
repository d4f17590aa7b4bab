//! Reaching a node's kubelet endpoint: through a tunnel its agent opened (`node_tunnel`), or
//! at the address and port of the Node object over mutual TLS (the kubelet's certificate
//! checked against the cluster CA, ours presented); then one
//! HTTP/1.1 request whose response body streams back (`pods/log`), or an upgraded connection
//! whose bytes are copied both ways (`pods/exec`, `pods/attach`, `pods/portforward`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::serving::pki::ClientCert;
use crate::status::ApiError;
use crate::AppState;

/// Connecting (TCP and TLS) to a kubelet must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The kubelet must answer with its headers within this (the body may stream for long).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A kubelet's error text longer than this is cut.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The TLS client configurations for kubelets: verifying their certificates, and not
/// (`insecureSkipTLSVerifyBackend`, for a kubelet whose certificate does not match).
#[derive(Clone)]
pub struct KubeletClientTls {
    verified: Arc<rustls::ClientConfig>,
    unverified: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletTlsError {
    #[error("the cluster CA holds no usable certificate")]
    BadCa,
    #[error("the kubelet client certificate or key is not usable PEM")]
    BadClientCert,
    #[error("{0}")]
    Tls(#[from] rustls::Error),
}

impl KubeletClientTls {
    pub fn new(ca_pem: &str, client: &ClientCert) -> Result<Self, KubeletTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|_| KubeletTlsError::BadCa)?)
                .map_err(|_| KubeletTlsError::BadCa)?;
        }
        if roots.is_empty() {
            return Err(KubeletTlsError::BadCa);
        }
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| KubeletTlsError::BadClientCert)?;
        let key = rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or(KubeletTlsError::BadClientCert)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        let unverified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_client_auth_cert(chain, key)?;
        Ok(KubeletClientTls {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }
}

/// Accepts any server certificate (still checking the handshake's signatures): only for
/// requests that asked for `insecureSkipTLSVerifyBackend`.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
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

/// Where a node's kubelet listens, from its Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletAddress {
    pub ip: IpAddr,
    pub port: u16,
}

/// The node's address and port. Addresses are tried as InternalIP, then ExternalIP: the
/// upstream default puts Hostname first, but that needs DNS names capstan's nodes rarely have.
pub fn kubelet_address(node: &Value) -> Result<KubeletAddress, ApiError> {
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"].iter().find_map(|want| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(want))
            .find_map(|a| a.get("address")?.as_str()?.parse::<IpAddr>().ok())
    });
    let Some(ip) = ip else {
        return Err(unavailable(format!(
            "node {name:?} has no address to reach its kubelet at"
        )));
    };
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        return Err(unavailable(format!(
            "node {name:?} reports no kubelet endpoint port"
        )));
    };
    Ok(KubeletAddress { ip, port })
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

/// The Node object named `node`, or a 404 as upstream's connection-info lookup answers.
pub async fn node_object(state: &AppState, node: &str) -> Result<Value, ApiError> {
    let rt = state
        .registry
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not registered"))?;
    crate::rest::read(state, &rt, None, node)
        .await?
        .map(|(obj, _)| obj)
        .ok_or_else(|| ApiError::not_found("", "nodes", node))
}

/// A connection to a node's kubelet, HTTP/1.1 handshake done, and how requests on it name
/// the kubelet (`Host`) and where it is (for error messages).
struct Kubelet {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    host: String,
    /// `at 10.0.0.7:10250`, or `through its tunnel`.
    via: String,
}

impl Kubelet {
    fn error(&self, node: &str, e: impl std::fmt::Display) -> ApiError {
        unavailable(format!(
            "error dialing the kubelet of node {node:?} {}: {e}",
            self.via
        ))
    }
}

/// Whether the Node names a kubelet endpoint port: an agent without an endpoint of its own
/// reports 0 and is reached only through its tunnel.
fn reports_kubelet_port(node: &Value) -> bool {
    node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .is_some_and(|p| p > 0)
}

/// A connection to the node's kubelet: a parked tunnel connection its agent opened when it
/// has any (or when the Node reports no endpoint, waiting for the agent to reconnect), else
/// a TLS connection to the address its Node reports.
async fn dial(
    state: &AppState,
    node: &str,
    insecure_skip_verify: bool,
) -> Result<Kubelet, ApiError> {
    if state.tunnels.has_tunnels(node) {
        return through_tunnel(state, node).await;
    }
    let object = node_object(state, node).await?;
    if !reports_kubelet_port(&object) {
        return through_tunnel(state, node).await;
    }
    let tls = state
        .kubelet_client
        .clone()
        .ok_or_else(|| unavailable("this server has no client certificate for kubelets".into()))?;
    let addr = kubelet_address(&object)?;
    let config = if insecure_skip_verify {
        tls.unverified
    } else {
        tls.verified
    };
    let dial_error = |e: String| {
        unavailable(format!(
            "error dialing the kubelet of node {node:?} at {}:{}: {e}",
            addr.ip, addr.port
        ))
    };
    let connect = async {
        let tcp = TcpStream::connect((addr.ip, addr.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(ServerName::IpAddress(addr.ip.into()), tcp)
            .await
            .map_err(|e| e.to_string())
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| dial_error("timed out".into()))?
        .map_err(dial_error)?;
    let kubelet = handshake(TokioIo::new(stream), node)
        .await
        .map_err(|e| dial_error(e.to_string()))?;
    Ok(Kubelet {
        sender: kubelet,
        host: format!("{}:{}", addr.ip, addr.port),
        via: format!("at {}:{}", addr.ip, addr.port),
    })
}

/// A parked tunnel connection of `node` (waiting up to the connect timeout for one), as an
/// HTTP/1.1 client connection: the outer TLS already authenticated both ends.
async fn through_tunnel(state: &AppState, node: &str) -> Result<Kubelet, ApiError> {
    let stream = state.tunnels.take(node, CONNECT_TIMEOUT).await?;
    let sender = handshake(stream, node).await.map_err(|e| {
        unavailable(format!(
            "error dialing the kubelet of node {node:?} through its tunnel: {e}"
        ))
    })?;
    Ok(Kubelet {
        sender,
        host: node.to_string(),
        via: "through its tunnel".into(),
    })
}

/// The HTTP/1.1 handshake; the connection task is spawned (with upgrades, so a 101 answer
/// hands the connection over).
async fn handshake<T>(
    io: T,
    node: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // Drives the connection while the body streams (or hands it over on a 101); ends with
    // it, or when the client goes away and the body is dropped.
    let node = node.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(node, error = %e, "kubelet connection ended");
        }
    });
    Ok(sender)
}

async fn send(
    kubelet: &mut Kubelet,
    node: &str,
    request: Request<Body>,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, kubelet.sender.send_request(request)).await {
        Err(_) => Err(kubelet.error(node, "no response in time")),
        Ok(Err(e)) => Err(kubelet.error(node, e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// A non-2xx kubelet answer as a Status carrying its text.
async fn refusal(response: Response<hyper::body::Incoming>) -> ApiError {
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    kubelet_error(status, text)
}

/// GETs `path_and_query` from the node's kubelet. A 2xx answer's body streams through as
/// `text/plain`; any other becomes a Status carrying the kubelet's text, as upstream's
/// response checker does.
pub async fn get(
    state: &AppState,
    node: &str,
    path_and_query: &str,
    insecure_skip_verify: bool,
) -> Result<Response, ApiError> {
    let mut kubelet = dial(state, node, insecure_skip_verify).await?;
    let request = Request::get(path_and_query)
        .header(header::HOST, kubelet.host.clone())
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let response = send(&mut kubelet, node, request).await?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(response.into_body()))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

/// Request headers an upgrade carries to the kubelet (the handshake; not the client's
/// credentials, which were for us).
const UPGRADE_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "x-stream-protocol-version",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
];
/// Response headers of the kubelet's 101 passed back to the client.
const UPGRADE_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "x-stream-protocol-version",
    "sec-websocket-accept",
    "sec-websocket-protocol",
];

/// Sends the client's upgrade request (`method`, the handshake headers) to the kubelet. On
/// its 101 the returned response is the 101 for the client, and once the client's side is
/// upgraded too (`client`) bytes are copied both ways until both ends close. Any other
/// answer is a Status.
pub async fn upgrade(
    state: &AppState,
    node: &str,
    method: &axum::http::Method,
    path_and_query: &str,
    headers: &axum::http::HeaderMap,
    client: hyper::upgrade::OnUpgrade,
) -> Result<Response, ApiError> {
    let mut kubelet = dial(state, node, false).await?;
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header(header::HOST, kubelet.host.clone());
    for name in UPGRADE_REQUEST_HEADERS {
        for value in headers.get_all(*name) {
            request = request.header(*name, value.clone());
        }
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let mut response = send(&mut kubelet, node, request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(response).await);
    }
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in UPGRADE_RESPONSE_HEADERS {
        for value in response.headers().get_all(*name) {
            answer = answer.header(*name, value.clone());
        }
    }
    let kubelet = hyper::upgrade::on(&mut response);
    let node = node.to_string();
    tokio::spawn(async move {
        let (kubelet, client) = match tokio::join!(kubelet, client) {
            (Ok(k), Ok(c)) => (k, c),
            (k, c) => {
                tracing::debug!(
                    node,
                    kubelet_ok = k.is_ok(),
                    client_ok = c.is_ok(),
                    "streaming upgrade failed"
                );
                return;
            }
        };
        let mut kubelet = TokioIo::new(kubelet);
        let mut client = TokioIo::new(client);
        match tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            Ok((up, down)) => tracing::debug!(node, up, down, "streaming connection ended"),
            Err(e) => tracing::debug!(node, error = %e, "streaming connection ended"),
        }
    });
    answer
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the upgrade response: {e}")))
}

/// A kubelet's refusal as a Status of the same code.
fn kubelet_error(status: StatusCode, text: String) -> ApiError {
    let reason = match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "InternalError",
    };
    ApiError::new(status, reason, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_address_comes_from_the_node_status() {
        let node = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n"},
                          {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(
            kubelet_address(&node).expect("address"),
            KubeletAddress {
                ip: "10.0.0.7".parse().expect("ip"),
                port: 10250
            }
        );
        let no_port = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]}});
        assert_eq!(
            kubelet_address(&no_port).expect_err("no port").code,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
