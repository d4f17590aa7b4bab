//! Port-forward sessions (`/portforward/...`): per forwarded connection a TCP connection made
//! from inside the pod's network namespace, spliced to the client's data stream; failures
//! are written to the connection's error stream for kubectl to print.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::Message;

use super::spdy::header_block::get as header;
use super::spdy::session::{Session, StreamWriter};
use super::websocket;

/// Connecting to the port inside the pod must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which pod a session forwards into.
#[derive(Debug, Clone)]
pub struct Target {
    pub pod: String,
    pub uid: String,
    /// The pod's network namespace file; None for a hostNetwork pod.
    pub netns: Option<PathBuf>,
}

/// Connects to `port` on the pod's loopback (IPv4, then IPv6), from a thread of its own that
/// enters the pod's network namespace: a tokio worker must never change namespace.
pub async fn connect(target: &Target, port: u16) -> Result<TcpStream, String> {
    let netns = target.netns.clone();
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let result = (|| -> Result<std::net::TcpStream, String> {
                if let Some(path) = &netns {
                    let file = std::fs::File::open(path)
                        .map_err(|e| format!("opening {}: {e}", path.display()))?;
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("entering {}: {e}", path.display()))?;
                }
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                let stream = match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
                    Ok(s) => s,
                    Err(e4) => std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(
                        |e6| format!("IPv4: dial tcp4 {v4}: {e4} IPv6: dial tcp6 {v6}: {e6}"),
                    )?,
                };
                stream.set_nonblocking(true).map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok(stream)
            })();
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("starting the connect thread: {e}"));
    }
    let stream = rx
        .await
        .map_err(|_| "the connect thread ended without an answer".to_string())?
        .map_err(|e| {
            format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                target.pod, target.uid
            )
        })?;
    TcpStream::from_std(stream).map_err(|e| e.to_string())
}

/// Splices one forwarded connection: the client's data to the socket (its FIN becomes our
/// write shutdown), the socket's to the client (EOF becomes FIN). It ends when the pod's side
/// ends, as upstream's runtimes do: kubectl waits for the error stream's end before it closes
/// the local connection, so waiting for the client's FIN too would hang both.
async fn splice(tcp: TcpStream, mut incoming: mpsc::Receiver<Bytes>, out: StreamWriter) {
    let (mut r, mut w) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(data) = incoming.recv().await {
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = out.close().await;
    upstream.abort();
}

/// Serves a SPDY port-forward session until the client ends it: streams come in pairs
/// (`streamType` error, then data) sharing a `requestID` and naming the `port`.
pub async fn serve_spdy(mut session: Session, target: Target) {
    let mut errors: HashMap<String, StreamWriter> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let request = header(&stream.headers, "requestid")
            .unwrap_or("")
            .to_string();
        let port = header(&stream.headers, "port").unwrap_or("").to_string();
        match header(&stream.headers, "streamtype").unwrap_or("") {
            "error" => {
                // Bounded: a client opening error streams without data streams is cut off.
                if errors.len() >= 512 {
                    stream
                        .writer
                        .reset(super::spdy::frame::RST_REFUSED_STREAM)
                        .await;
                    continue;
                }
                errors.insert(request, stream.writer);
            }
            "data" => {
                let error = errors.remove(&request);
                let target = target.clone();
                tokio::spawn(async move {
                    let port_number = port.parse::<u16>().ok().filter(|p| *p > 0);
                    let result = match port_number {
                        Some(p) => connect(&target, p).await,
                        None => Err(format!("invalid port {port:?}")),
                    };
                    match result {
                        Ok(tcp) => {
                            tracing::debug!(pod = %target.pod, port, request, "port-forward connection");
                            splice(tcp, stream.incoming, stream.writer).await
                        }
                        Err(message) => {
                            tracing::debug!(pod = %target.pod, port, %message, "port-forward failed");
                            if let Some(e) = &error {
                                let _ = e.write(Bytes::from(message)).await;
                            }
                            let _ = stream.writer.close().await;
                        }
                    }
                    if let Some(e) = error {
                        let _ = e.close().await;
                    }
                });
            }
            other => {
                tracing::debug!(stream_type = other, "port-forward: unknown stream type");
                stream
                    .writer
                    .reset(super::spdy::frame::RST_PROTOCOL_ERROR)
                    .await;
            }
        }
    }
}

/// Serves a `v4.channel.k8s.io` port-forward WebSocket (kube-rs, the Python client): the
/// ports come from the query; port i uses channel 2i for data and 2i+1 for errors, and the
/// first message we send on each channel is the port number (2 bytes, little-endian).
pub async fn serve_websocket<IO>(
    ws: tokio_tungstenite::WebSocketStream<IO>,
    target: Target,
    ports: Vec<u16>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut inputs: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut conns = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        for ch in [data_ch, err_ch] {
            let _ = tx
                .send(websocket::channel_message(ch, &port.to_le_bytes()))
                .await;
        }
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(32);
        inputs.push(Some(in_tx));
        let tx = tx.clone();
        let target = target.clone();
        let port = *port;
        conns.push(tokio::spawn(async move {
            let tcp = match connect(&target, port).await {
                Ok(t) => t,
                Err(message) => {
                    let _ = tx
                        .send(websocket::channel_message(err_ch, message.as_bytes()))
                        .await;
                    return;
                }
            };
            let (mut r, mut w) = tcp.into_split();
            let up = async move {
                while let Some(d) = in_rx.recv().await {
                    if w.write_all(&d).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0
                        || tx
                            .send(websocket::channel_message(data_ch, &buf[..n]))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            };
            tokio::join!(up, down);
        }));
    }
    drop(tx);
    let aborts: Vec<_> = conns.iter().map(|c| c.abort_handle()).collect();
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            let (channel, payload) = match websocket::received(msg) {
                websocket::Received::Channel(c, p) => (c, p),
                websocket::Received::Close => break,
                websocket::Received::Other => continue,
            };
            let index = usize::from(channel / 2);
            if channel % 2 != 0 || payload.is_empty() {
                continue;
            }
            if let Some(Some(tx)) = inputs.get(index) {
                if tx.send(payload).await.is_err() {
                    inputs[index] = None;
                }
            }
        }
        inputs.clear();
    };
    let all_done = async {
        for c in conns {
            let _ = c.await;
        }
    };
    // The session lasts while the client is there and any connection is open.
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
    }
    for a in aborts {
        a.abort();
    }
    let _ = writer.await;
}
