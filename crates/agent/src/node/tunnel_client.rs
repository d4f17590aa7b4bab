//! The agent's end of the reverse tunnel: a few idle connections to the API server (its own
//! API client's TLS and credentials, upgraded to `capstan-tunnel`), each serving one kubelet
//! request when the server takes it; a taken or dead one is replaced at once, with back-off.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Idle connections kept open: one serves while the other is being replaced.
pub const IDLE_CONNECTIONS: usize = 2;
/// The `Upgrade` token the API server expects.
const PROTOCOL: &str = "capstan-tunnel";
/// First wait after a failed or unused connection; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts: a restarted server finds the agent back within it.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection parked this long before it closed counts as healthy (no back-off growth).
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// A refusal's text longer than this is cut.
const MAX_ERROR_BODY: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("building the tunnel request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("connecting to the API server: {0}")]
    Connect(#[from] kube::Error),
    #[error("the API server refused the tunnel ({code}): {message}")]
    Refused { code: u16, message: String },
    #[error("the tunnel upgrade failed: {0}")]
    Upgrade(#[from] hyper::Error),
}

/// How a parked connection ended its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The server sent a request on it.
    Taken,
    /// It closed (or failed) before any request.
    Closed,
}

/// Keeps `IDLE_CONNECTIONS` tunnel connections for node `node` open until the process ends;
/// each serves `app` (the kubelet endpoint's routes) for the one request it carries.
pub fn start(client: kube::Client, node: String, app: Router) {
    for slot in 0..IDLE_CONNECTIONS {
        tokio::spawn(keep_one(client.clone(), node.clone(), app.clone(), slot));
    }
}

/// One slot: open, wait until taken or closed, open again.
async fn keep_one(client: kube::Client, node: String, app: Router, slot: usize) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    loop {
        let stream = match open(&client, &node).await {
            Ok(s) => s,
            Err(e) => {
                // Once per distinct error at warn: a server away for an hour logs once.
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(node, slot, error = %text, "tunnel: cannot connect; retrying");
                    last_error = text;
                } else {
                    tracing::debug!(node, slot, error = %text, "tunnel: cannot connect");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !last_error.is_empty() {
            tracing::info!(node, slot, "tunnel: connected");
            last_error.clear();
        }
        let parked = Instant::now();
        let (tell, told) = oneshot::channel();
        tokio::spawn(serve(stream, app.clone(), tell, node.clone()));
        // A dropped sender is a connection that ended unused.
        match told.await.unwrap_or(Outcome::Closed) {
            Outcome::Taken => backoff = FIRST_BACKOFF,
            Outcome::Closed => {
                tracing::debug!(node, slot, "tunnel: parked connection closed");
                if parked.elapsed() >= HEALTHY_AFTER {
                    backoff = FIRST_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One tunnel connection: the upgrade request on the agent's API client, answered 101.
async fn open(client: &kube::Client, node: &str) -> Result<hyper::upgrade::Upgraded, TunnelError> {
    let request = axum::http::Request::get(format!("/capstan.io/v1/nodes/{node}/tunnel"))
        .header(axum::http::header::CONNECTION, "Upgrade")
        .header(axum::http::header::UPGRADE, PROTOCOL)
        .body(kube::client::Body::from(Vec::new()))?;
    let mut response = client.send(request).await?;
    if response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
        let code = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // A Status names the reason; anything else is passed on as text.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(TunnelError::Refused { code, message });
    }
    Ok(hyper::upgrade::on(&mut response).await?)
}

/// Serves one HTTP/1.1 request (and its upgrade: exec, port-forward) over the tunnel. No
/// header timeout: a parked connection waits for its request as long as the server keeps it.
async fn serve(
    stream: hyper::upgrade::Upgraded,
    app: Router,
    tell: oneshot::Sender<Outcome>,
    node: String,
) {
    let io = FirstRead {
        inner: TokioIo::new(stream),
        tell: Some(tell),
    };
    // Keep-alive stays on: off, hyper would add `Connection: close` to a 101 and break the
    // upgrade. The server drops the connection after its one request.
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(node, error = %e, "tunnel: connection ended");
    }
}

/// A stream that says, on its first read, whether a request arrived or it closed.
struct FirstRead<S> {
    inner: S,
    tell: Option<oneshot::Sender<Outcome>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(result) = &r {
            let got = result.is_ok() && buf.filled().len() > before;
            if let Some(tell) = self.tell.take() {
                let _ = tell.send(if got { Outcome::Taken } else { Outcome::Closed });
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_first_read_tells_taken_or_closed() {
        let (mut near, far) = tokio::io::duplex(64);
        let (tell, told) = oneshot::channel();
        let mut io = FirstRead {
            inner: far,
            tell: Some(tell),
        };
        near.write_all(b"GET").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.expect("read"), 3);
        assert_eq!(told.await.expect("told"), Outcome::Taken);

        let (near, far) = tokio::io::duplex(64);
        let (tell, told) = oneshot::channel();
        let mut io = FirstRead {
            inner: far,
            tell: Some(tell),
        };
        drop(near);
        assert_eq!(io.read(&mut buf).await.expect("eof"), 0);
        assert_eq!(told.await.expect("told"), Outcome::Closed);
    }
}
