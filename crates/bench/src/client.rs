//! One HTTP/1.1 connection to the API server (TCP, optionally TLS) with a minimal request
//! helper. Each simulated client owns one, so the tool adds no pool or locking of its own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::BenchError;
use crate::kubeconfig::Endpoint;

/// A plain or TLS stream behind one type, so a connection is the same either way.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
    authorization: Option<String>,
}

/// A complete response.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn ok(self, method: &Method, path: &str) -> Result<Bytes, BenchError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(self.unexpected(method, path))
        }
    }
    pub fn unexpected(&self, method: &Method, path: &str) -> BenchError {
        BenchError::Unexpected {
            method: method.to_string(),
            path: path.to_string(),
            status: self.status.as_u16(),
            body: String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned(),
        }
    }
}

impl Conn {
    pub async fn open(ep: &Endpoint) -> Result<Conn, BenchError> {
        let addr = format!("{}:{}", ep.host, ep.port);
        let connect_err = |reason: String| BenchError::Connect {
            addr: addr.clone(),
            reason,
        };
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &ep.tls {
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| connect_err(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(tls))
            }
            None => Stream::Plain(tcp),
        };
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = if ep.host.contains(':') {
            format!("[{}]:{}", ep.host, ep.port)
        } else {
            format!("{}:{}", ep.host, ep.port)
        };
        Ok(Conn {
            send,
            host,
            authorization: ep.authorization.clone(),
        })
    }

    async fn start(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<hyper::Response<Incoming>, BenchError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("accept", "application/json")
            .header("user-agent", "capstan-bench");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        let body = match body {
            Some((b, ct)) => {
                req = req.header("content-type", ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| BenchError::Http(e.to_string()))?;
        self.send
            .ready()
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        self.send
            .send_request(req)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Reply, BenchError> {
        let resp = self.start(method, path, body).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, BenchError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn send_json(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, BenchError> {
        self.request(method, path, Some((body, "application/json")))
            .await
    }

    /// Start a streaming GET (a watch); the caller reads the body frame by frame.
    pub async fn stream(&mut self, path: &str) -> Result<WatchBody, BenchError> {
        let resp = self.start(Method::GET, path, None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Reply { status, body }.unexpected(&Method::GET, path));
        }
        Ok(WatchBody {
            body: resp.into_body(),
            buf: Vec::new(),
            pos: 0,
        })
    }
}

/// A newline-delimited JSON stream (a watch response), read a line at a time.
pub struct WatchBody {
    body: Incoming,
    buf: Vec<u8>,
    pos: usize,
}

impl WatchBody {
    /// The next complete line, or `None` when the server ended the stream.
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>, BenchError> {
        loop {
            if let Some(nl) = self.buf[self.pos..].iter().position(|b| *b == b'\n') {
                let start = self.pos;
                self.pos += nl + 1;
                return Ok(Some(&self.buf[start..start + nl]));
            }
            // Keep only the unread tail before reading more.
            self.buf.drain(..self.pos);
            self.pos = 0;
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(BenchError::Http(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
