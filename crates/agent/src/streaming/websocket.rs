//! WebSocket over an upgraded connection: the handshake answer, the `channel.k8s.io` framing
//! (one leading channel byte per binary message) and a byte-stream view of binary messages
//! for `SPDY/3.1+portforward.k8s.io` (SPDY frames tunnelled through WebSocket).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// A message larger than this ends the connection (kubectl sends 32 KiB chunks).
const MAX_MESSAGE: usize = 16 << 20;

/// The `Sec-WebSocket-Accept` answer to a client's key.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// The server side of an already-upgraded connection.
pub async fn server<IO>(io: IO) -> WebSocketStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// Binary messages as a byte stream: reads concatenate message payloads, each write is one
/// message. Pings are answered by the WebSocket layer; a Close message is end of stream.
pub struct ByteStream<IO> {
    ws: WebSocketStream<IO>,
    pending: Bytes,
    eof: bool,
}

impl<IO> ByteStream<IO> {
    pub fn new(ws: WebSocketStream<IO>) -> Self {
        ByteStream {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn io_err(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ByteStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    this.eof = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_err(e))),
                Poll::Ready(Some(Ok(Message::Binary(b)))) => this.pending = b,
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ByteStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.ws).poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_err(e))),
            Poll::Ready(Ok(())) => {}
        }
        let n = data.len().min(MAX_MESSAGE / 2);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&data[..n])))
            .map_err(io_err)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_err)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(io_err)
    }
}

/// The Close message ending a session that went as planned (status 1000).
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// A `channel.k8s.io` message: the channel byte, then the payload.
pub fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Splits a received binary message into its channel and payload (None when empty).
pub fn split_channel(msg: &Bytes) -> Option<(u8, Bytes)> {
    let (&channel, _) = msg.split_first()?;
    Some((channel, msg.slice(1..)))
}

/// What a received message is to a channel protocol.
pub enum Received {
    /// A channel's bytes (binary, or text as the Python client sends what it was given).
    Channel(u8, Bytes),
    Close,
    /// Pings, pongs, empty messages: nothing for a channel.
    Other,
}

pub fn received(msg: Message) -> Received {
    let data = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
        Message::Close(_) => return Received::Close,
        _ => return Received::Other,
    };
    match split_channel(&data) {
        Some((channel, payload)) => Received::Channel(channel, payload),
        None => Received::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn channels_split_and_join() {
        let Message::Binary(b) = channel_message(1, b"out") else {
            panic!("binary")
        };
        assert_eq!(split_channel(&b), Some((1, Bytes::from_static(b"out"))));
        assert_eq!(split_channel(&Bytes::new()), None);
    }

    #[tokio::test]
    async fn binary_messages_read_and_write_as_bytes() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut server = ByteStream::new(server(a).await);
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        client
            .send(Message::Binary(Bytes::from_static(b"abc")))
            .await
            .expect("send");
        client
            .send(Message::Binary(Bytes::from_static(b"def")))
            .await
            .expect("send");
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abcdef");
        server.write_all(b"xyz").await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(
            client.next().await.expect("message").expect("ok"),
            Message::Binary(Bytes::from_static(b"xyz"))
        );
        client.close(None).await.expect("close");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }
}
