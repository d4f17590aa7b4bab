//! The TLS listener: accepts connections, completes the rustls handshake off the accept
//! loop, and serves HTTP/1.1 and HTTP/2 (ALPN) with hyper on each — with time limits on
//! every phase a client could stall, and a cap on connections that have not authenticated.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::serving::client_cert::LenientClientVerifier;

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this (also how long an idle HTTP/1 connection is kept).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose client takes no response data for this long is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle time before TCP keep-alive probes, and between them.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Connections open at once that have not yet sent an authenticated request; past this
/// the oldest of them is closed, so idle or handshaking strangers can neither use up
/// descriptors nor lock out a real client that connects during a flood.
pub const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 1024;

/// The connections that have not authenticated yet, oldest first.
#[derive(Default)]
struct Strangers {
    waiting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next_id: AtomicU64,
}

impl Strangers {
    /// Register a new connection; returns its id and the signal that evicts it.
    fn admit(&self) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.push_back((id, evict.clone()));
        while waiting.len() > MAX_UNAUTHENTICATED_CONNECTIONS {
            if let Some((_, oldest)) = waiting.pop_front() {
                oldest.notify_one();
            }
        }
        (id, evict)
    }

    fn forget(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = waiting.iter().position(|(i, _)| *i == id) {
            waiting.remove(at);
        }
    }
}

/// Per connection: its place among the unauthenticated ones until a request on it
/// authenticates. Handlers find it in the request's extensions.
#[derive(Clone)]
pub struct ConnGate {
    strangers: Arc<Strangers>,
    id: u64,
    done: Arc<AtomicBool>,
}

impl ConnGate {
    /// The connection has proven who it is: it is no longer a stranger.
    pub fn authenticated(&self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            self.strangers.forget(self.id);
        }
    }
}

/// Serve `router` over TLS on `listener` until the process ends.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    client_certs: Arc<LenientClientVerifier>,
    router: Router,
) {
    let acceptor = TlsAcceptor::from(tls);
    let strangers = Arc::new(Strangers::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // TCP keep-alive as Go's server sets it (kube-apiserver: 15 s): a dead peer's
        // connection ends, and a NAT between an agent and us keeps its parked tunnel open.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE)
            .with_interval(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let client_certs = client_certs.clone();
        let (id, evicted) = strangers.admit();
        let gate = ConnGate {
            strangers: strangers.clone(),
            id,
            done: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(async move {
            let serve = serve_connection(tcp, peer, acceptor, &client_certs, router, gate.clone());
            tokio::select! {
                _ = serve => {}
                _ = evicted.notified() => {
                    tracing::debug!(%peer, "too many unauthenticated connections; closed the oldest");
                }
            }
            // Gone either way: no longer waiting to authenticate.
            gate.authenticated();
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    client_certs: &LenientClientVerifier,
    router: Router,
    gate: ConnGate,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // A client certificate, checked against the cluster CA: its user (or its refusal) is
    // the identity of every request on this connection.
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| client_certs.identity(chain));
    let service = tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(gate.clone());
            if let Some(identity) = &identity {
                req.extensions_mut().insert(identity.clone());
            }
            // The audit log's sourceIPs.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    );
    let service = TowerToHyperService::new(service);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(1 << 20);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(250)
        .max_header_list_size(1 << 20);
    let io = TokioIo::new(StallGuard::new(tls, WRITE_STALL_TIMEOUT));
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// An I/O stream whose writes fail once they have made no progress for `limit`: a client
/// that stops reading (a stalled watch, a slow-read attack) loses its connection instead
/// of holding the server's buffers for ever.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took no data for too long",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_limit() {
        // A duplex pipe nobody reads: writes stop once its 64-byte buffer is full.
        let (a, _b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn past_the_cap_the_oldest_stranger_is_evicted_and_the_authenticated_are_not() {
        let strangers = Arc::new(Strangers::default());
        let (first, first_evict) = strangers.admit();
        let (_, second_evict) = strangers.admit();
        ConnGate {
            strangers: strangers.clone(),
            id: first,
            done: Arc::new(AtomicBool::new(false)),
        }
        .authenticated();
        let rest: Vec<_> = (0..MAX_UNAUTHENTICATED_CONNECTIONS)
            .map(|_| strangers.admit())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // The second (oldest unauthenticated) was told to go…
            tokio::time::timeout(Duration::from_secs(1), second_evict.notified())
                .await
                .expect("oldest stranger evicted");
            // …the authenticated first one and the newest were not.
            assert!(
                tokio::time::timeout(Duration::from_millis(50), first_evict.notified())
                    .await
                    .is_err()
            );
            let newest = &rest.last().unwrap().1;
            assert!(
                tokio::time::timeout(Duration::from_millis(50), newest.notified())
                    .await
                    .is_err()
            );
        });
        assert_eq!(
            strangers.waiting.lock().unwrap().len(),
            MAX_UNAUTHENTICATED_CONNECTIONS
        );
    }

    #[tokio::test]
    async fn writes_that_progress_are_untouched() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut out)
                .await
                .unwrap();
            out.len()
        });
        guarded.write_all(&[7u8; 100_000]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap(), 100_000);
    }
}
