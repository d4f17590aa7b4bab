//! The kubelet's streaming paths (`/exec`, `/attach`, `/portforward`, upstream's): finds the
//! pod and container, negotiates SPDY or WebSocket and its subprotocol, answers 101 and runs
//! the session on the upgraded connection.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::portforward::{self, Target};
use super::remotecommand::{self, ExecOptions};
use super::spdy::session::Session;
use super::websocket;
use crate::runtime::Runtime;

pub struct StreamingState {
    pub client: kube::Client,
    pub runtime: Arc<Runtime>,
}

/// Exec subprotocols we speak, best first (v4 and v5 differ only over WebSocket: v5 can
/// close stdin).
const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_SPDY: &str = "portforward.k8s.io";
/// kubectl 1.31+: SPDY frames inside WebSocket binary messages.
const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const PORT_FORWARD_CHANNELS: &str = "v4.channel.k8s.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Spdy { protocol: &'static str },
    WebSocket { protocol: &'static str, key: String },
}

/// Why a request is not served: the kubelet's status code and plain-text message, which the
/// API server passes on as a Status.
#[derive(Debug)]
pub struct Refusal {
    pub code: StatusCode,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

fn text(code: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Every value of a header that may repeat or hold a comma-separated list.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Picks the transport and subprotocol, as upstream's handshake does: ours in our order of
/// preference among those the client offers; none in common is a 403.
pub fn negotiate(
    headers: &HeaderMap,
    spdy: &[&'static str],
    ws: &[&'static str],
) -> Result<Transport, Refusal> {
    let upgrade = list(headers, "upgrade");
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = list(headers, "sec-websocket-protocol");
        let Some(key) = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
        };
        return match ws.iter().find(|p| offered.iter().any(|o| o == *p)) {
            Some(p) => Ok(Transport::WebSocket {
                protocol: p,
                key: key.to_string(),
            }),
            None => Err(text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ws:?}"
                ),
            )),
        };
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = list(headers, "x-stream-protocol-version");
        return match spdy.iter().find(|p| offered.iter().any(|o| o == *p)) {
            Some(p) => Ok(Transport::Spdy { protocol: p }),
            None => Err(text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {spdy:?}"
                ),
            )),
        };
    }
    Err(text(StatusCode::BAD_REQUEST, "Upgrade request required"))
}

/// The 101 answer for the chosen transport.
fn switching(transport: &Transport) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    match transport {
        Transport::Spdy { protocol } => {
            builder = builder
                .header(header::UPGRADE, "SPDY/3.1")
                .header("X-Stream-Protocol-Version", *protocol);
        }
        Transport::WebSocket { protocol, key } => {
            builder = builder
                .header(header::UPGRADE, "websocket")
                .header(
                    "Sec-WebSocket-Accept",
                    HeaderValue::from_str(&websocket::accept_key(key.as_bytes()))
                        .unwrap_or(HeaderValue::from_static("")),
                )
                .header("Sec-WebSocket-Protocol", *protocol);
        }
    }
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The pod's uid, or the kubelet's 404.
async fn pod_uid(state: &StreamingState, ns: &str, pod: &str) -> Result<String, Refusal> {
    let api: Api<Pod> = Api::namespaced(state.client.clone(), ns);
    match api.get_opt(pod).await {
        Ok(Some(p)) => p
            .metadata
            .uid
            .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("pod {pod:?} has no uid"))),
        Ok(None) => Err(text(
            StatusCode::NOT_FOUND,
            format!("pod does not exist ({ns}/{pod})"),
        )),
        Err(e) => Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading pod {ns}/{pod}: {e}"),
        )),
    }
}

/// The running container's runtime id (its newest attempt), or upstream's 404.
async fn running_container(
    state: &StreamingState,
    uid: &str,
    name: &str,
) -> Result<String, Refusal> {
    let records = state.runtime.list().await.map_err(|e| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing containers: {e}"),
        )
    })?;
    records
        .into_iter()
        .filter(|r| {
            r.pod_uid == uid
                && r.labels
                    .get(crate::pods::LABEL_CONTAINER)
                    .map(String::as_str)
                    == Some(name)
                && matches!(r.state, crate::runtime::ContainerState::Running { .. })
        })
        .max_by_key(|r| {
            r.labels
                .get(crate::pods::LABEL_ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .map(|r| r.id)
        .ok_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                format!("container not found ({name:?})"),
            )
        })
}

/// Answers 101 and runs `session` on the upgraded connection.
fn upgrade<F, Fut>(mut req: Request, transport: Transport, session: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, Transport) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    let response = switching(&transport);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(TokioIo::new(upgraded), transport).await,
            Err(e) => tracing::debug!(error = %e, "streaming: the upgrade failed"),
        }
    });
    response
}

/// `GET|POST /exec/{namespace}/{pod}/{container}?command=…&stdin=…&stdout=…&stderr=…&tty=…`
pub async fn exec(
    State(state): State<Arc<StreamingState>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let (opts, transport, id) =
        match remote_command(&state, &ns, &pod, &container, &query, req.headers(), true).await {
            Ok(found) => found,
            Err(refusal) => return refusal.into_response(),
        };
    tracing::info!(namespace = %ns, pod = %pod, container = %container, tty = opts.tty, stdin = opts.stdin, ?transport, "exec");
    let runtime = state.runtime.clone();
    upgrade(req, transport, move |io, transport| async move {
        run_remote_command(io, transport, &opts, Job::Exec { runtime, id }).await
    })
}

/// What exec and attach check first, in upstream's order: the options, the protocol, the
/// pod, its running container (whose runtime id comes back).
async fn remote_command(
    state: &StreamingState,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    need_command: bool,
) -> Result<(ExecOptions, Transport, String), Refusal> {
    let opts = remotecommand::parse_options(query, need_command)
        .map_err(|message| text(StatusCode::BAD_REQUEST, message))?;
    let transport = negotiate(headers, EXEC_PROTOCOLS, EXEC_PROTOCOLS)?;
    let uid = pod_uid(state, ns, pod).await?;
    let id = running_container(state, &uid, container).await?;
    Ok((opts, transport, id))
}

/// What a remote-command session drives: a new process (exec) or the container's own stdio.
enum Job {
    Exec { runtime: Arc<Runtime>, id: String },
    Attach(tokio::net::UnixStream),
}

impl Job {
    async fn run(self, opts: &ExecOptions, io: remotecommand::ExecIo) {
        match self {
            Job::Exec { runtime, id } => {
                remotecommand::run(&runtime, &id, opts, io).await;
            }
            Job::Attach(socket) => super::attach::run(socket, opts, io).await,
        }
    }
}

async fn run_remote_command(
    io: TokioIo<hyper::upgrade::Upgraded>,
    transport: Transport,
    opts: &ExecOptions,
    job: Job,
) {
    match transport {
        Transport::Spdy { .. } => {
            let mut session = Session::start(io);
            match remotecommand::spdy_io(&mut session, opts).await {
                Ok(eio) => job.run(opts, eio).await,
                Err(e) => tracing::debug!(error = %e, "the client's streams never came"),
            }
            session.close().await;
        }
        Transport::WebSocket { .. } => {
            let ws = websocket::server(io).await;
            let (eio, tx, writer) = remotecommand::websocket_io(ws, opts);
            job.run(opts, eio).await;
            // A normal close (1000): kubectl reads the end of its streams from it, while a
            // close without a status is an error to it.
            let _ = tx.send(websocket::normal_close()).await;
            drop(tx);
            let _ = writer.await;
        }
    }
}

/// `GET|POST /attach/{namespace}/{pod}/{container}?stdin=…&stdout=…&stderr=…&tty=…`: the
/// container's own stdio, from its shim.
pub async fn attach(
    State(state): State<Arc<StreamingState>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let (opts, transport, id) =
        match remote_command(&state, &ns, &pod, &container, &query, req.headers(), false).await {
            Ok(found) => found,
            Err(refusal) => return refusal.into_response(),
        };
    // Connected before the 101, so a container that just exited is an answer, not a session
    // that ends at once.
    let socket = match state.runtime.attach(&id).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unable to attach to container {container:?}: {e}"),
            )
            .into_response()
        }
    };
    tracing::info!(namespace = %ns, pod = %pod, container = %container, tty = opts.tty, stdin = opts.stdin, ?transport, "attach");
    upgrade(req, transport, move |io, transport| async move {
        run_remote_command(io, transport, &opts, Job::Attach(socket)).await
    })
}

/// `GET|POST /portforward/{namespace}/{pod}` (`?ports=…` for the WebSocket channel protocol).
pub async fn port_forward(
    State(state): State<Arc<StreamingState>>,
    UrlPath((ns, pod)): UrlPath<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let transport = match negotiate(
        req.headers(),
        &[PORT_FORWARD_SPDY],
        &[PORT_FORWARD_TUNNEL, PORT_FORWARD_CHANNELS],
    ) {
        Ok(t) => t,
        Err(refusal) => return refusal.into_response(),
    };
    let mut ports = Vec::new();
    for (k, v) in &query {
        if k == "ports" {
            match v.parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid port {v:?}: must be between 1 and 65535"),
                    )
                    .into_response()
                }
            }
        }
    }
    let channels = matches!(&transport, Transport::WebSocket { protocol, .. } if *protocol == PORT_FORWARD_CHANNELS);
    if channels && ports.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        )
        .into_response();
    }
    let uid = match pod_uid(&state, &ns, &pod).await {
        Ok(u) => u,
        Err(refusal) => return refusal.into_response(),
    };
    let target = Target {
        pod: pod.clone(),
        netns: state.runtime.pod_netns(&uid),
        uid,
    };
    tracing::info!(namespace = %ns, pod = %pod, ?transport, "port-forward");
    upgrade(req, transport, move |io, transport| async move {
        match transport {
            Transport::Spdy { .. } => portforward::serve_spdy(Session::start(io), target).await,
            Transport::WebSocket { protocol, .. } if protocol == PORT_FORWARD_TUNNEL => {
                let ws = websocket::server(io).await;
                let session = Session::start(websocket::ByteStream::new(ws));
                portforward::serve_spdy(session, target).await
            }
            Transport::WebSocket { .. } => {
                let ws = websocket::server(io).await;
                portforward::serve_websocket(ws, target, ports).await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_best_common_protocol_is_chosen() {
        let spdy = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&spdy, EXEC_PROTOCOLS, EXEC_PROTOCOLS).expect("spdy"),
            Transport::Spdy {
                protocol: "v5.channel.k8s.io"
            }
        );
        let ws = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            (
                "sec-websocket-protocol",
                "base64.channel.k8s.io, v4.channel.k8s.io",
            ),
        ]);
        assert_eq!(
            negotiate(&ws, EXEC_PROTOCOLS, EXEC_PROTOCOLS).expect("ws"),
            Transport::WebSocket {
                protocol: "v4.channel.k8s.io",
                key: "k".into()
            }
        );
        let old = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v1.channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&old, EXEC_PROTOCOLS, EXEC_PROTOCOLS)
                .expect_err("none in common")
                .code,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            negotiate(&HeaderMap::new(), EXEC_PROTOCOLS, EXEC_PROTOCOLS)
                .expect_err("no upgrade")
                .code,
            StatusCode::BAD_REQUEST
        );
    }
}
