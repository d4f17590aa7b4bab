//! A server-side SPDY/3.1 session over any byte stream: accepts the client's streams
//! (replying to each), delivers their data, answers pings, and writes our data frames.
//!
//! Flow control is not enforced in either direction, as the Go library kubectl uses does not
//! either; back-pressure is TCP's: a stream whose consumer is slow stops the session's reader.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{self, Frame, FLAG_FIN};
use super::header_block::{Compressor, Decompressor, Headers};

/// Data frames buffered per stream before the session's reader waits for the consumer.
const STREAM_BUFFER: usize = 32;
/// Frames queued for the writer.
const WRITE_QUEUE: usize = 64;
/// Streams a session may have open at once (kubectl opens 2 per forwarded connection).
const MAX_STREAMS: usize = 1024;
/// Our data frames are cut to this size (what Go's readers expect to see).
pub const MAX_WRITE_CHUNK: usize = 32 * 1024;

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; ends when it half-closes (FIN), resets, or the session ends.
    pub incoming: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

enum Outgoing {
    Frame(Frame),
    Reply(u32),
    /// GOAWAY, flush, and shut the write side down.
    Close,
}

/// Our side of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Outgoing>,
}

/// The session is gone (the connection ended).
#[derive(Debug, thiserror::Error)]
#[error("the SPDY session has ended")]
pub struct SessionGone;

impl StreamWriter {
    pub async fn write(&self, data: Bytes) -> Result<(), SessionGone> {
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_WRITE_CHUNK));
            self.out
                .send(Outgoing::Frame(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk,
                }))
                .await
                .map_err(|_| SessionGone)?;
        }
        Ok(())
    }

    /// Half-closes our side (an empty DATA frame with FIN).
    pub async fn close(&self) -> Result<(), SessionGone> {
        self.out
            .send(Outgoing::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }))
            .await
            .map_err(|_| SessionGone)
    }

    pub async fn reset(&self, status: u32) {
        let _ = self
            .out
            .send(Outgoing::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }))
            .await;
    }
}

/// A running session: the client's streams arrive on `streams`.
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    /// Turns true when the connection has ended (the client is gone).
    pub gone: tokio::sync::watch::Receiver<bool>,
    out: mpsc::Sender<Outgoing>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    pub fn start<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(write, out_rx));
        let (gone_tx, gone) = tokio::sync::watch::channel(false);
        let reading = read_loop(read, out_tx.clone(), streams_tx);
        let reader = tokio::spawn(async move {
            reading.await;
            let _ = gone_tx.send(true);
        });
        Session {
            streams: streams_rx,
            gone,
            out: out_tx,
            reader,
            writer,
        }
    }

    /// Writes what is queued, a GOAWAY, and ends the connection.
    pub async fn close(mut self) {
        let _ = self.out.send(Outgoing::Close).await;
        // The writer ends once it wrote the GOAWAY (or the peer is gone).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut compressor = Compressor::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Batch whatever is already queued into one write.
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(f) => frame::encode(&f, &mut buf),
                Outgoing::Reply(stream_id) => match compressor.compress(&[]) {
                    Ok(headers) => frame::encode(
                        &Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: headers.into(),
                        },
                        &mut buf,
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "SPDY: compressing a reply failed");
                        return;
                    }
                },
                Outgoing::Close => {
                    frame::encode(
                        &Frame::GoAway {
                            last_good_stream_id: 0,
                            status: 0,
                        },
                        &mut buf,
                    );
                    closing = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
        if closing {
            let _ = w.shutdown().await;
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    out: mpsc::Sender<Outgoing>,
    new_streams: mpsc::Sender<Stream>,
) {
    let mut decompressor = Decompressor::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame = match frame::parse(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                match r.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "SPDY: ending the session");
                return;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Every block goes through the one decompression context, even refused ones.
                let headers = match decompressor.decompress(&headers) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY: ending the session");
                        return;
                    }
                };
                let refuse = if open.contains_key(&stream_id) || stream_id % 2 == 0 {
                    Some(frame::RST_PROTOCOL_ERROR)
                } else if open.len() >= MAX_STREAMS {
                    Some(frame::RST_REFUSED_STREAM)
                } else {
                    None
                };
                if let Some(status) = refuse {
                    let _ = out
                        .send(Outgoing::Frame(Frame::RstStream { stream_id, status }))
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                if out.send(Outgoing::Reply(stream_id)).await.is_err() {
                    return;
                }
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                let stream = Stream {
                    id: stream_id,
                    headers,
                    incoming: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        out: out.clone(),
                    },
                };
                if new_streams.send(stream).await.is_err() {
                    // Nobody takes streams any more: the session is ending.
                    return;
                }
            }
            Frame::SynReply { headers, .. } | Frame::Headers { headers, .. } => {
                if decompressor.decompress(&headers).is_err() {
                    return;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = open.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream_id);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping { id } => {
                if out.send(Outgoing::Frame(Frame::Ping { id })).await.is_err() {
                    return;
                }
            }
            Frame::GoAway { .. } => return,
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::header_block::get;

    /// The client's half of a session, written by hand from frames.
    struct Client {
        io: tokio::io::DuplexStream,
        c: Compressor,
        d: Decompressor,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            frame::encode(&f, &mut b);
            self.io.write_all(&b).await.expect("write");
        }
        async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
            let h = self.c.compress(headers).expect("compress");
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h.into(),
            })
            .await;
        }
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = frame::parse(&mut self.buf).expect("server frame") {
                    if let Frame::SynReply { headers, .. } = &f {
                        self.d.decompress(headers).expect("reply headers");
                    }
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.expect("read") == 0 {
                    return None;
                }
            }
        }
    }

    fn pair() -> (Session, Client) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            Session::start(a),
            Client {
                io: b,
                c: Compressor::new(),
                d: Decompressor::new(),
                buf: BytesMut::new(),
            },
        )
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_carry_data_both_ways() {
        let (mut session, mut client) = pair();
        client.open(1, &[("streamType", "stdin")]).await;
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            })
            .await;
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
        client.send(Frame::Ping { id: 1 }).await;
        let mut s = session.streams.recv().await.expect("stream");
        assert_eq!(get(&s.headers, "streamtype"), Some("stdin"));
        assert_eq!(s.incoming.recv().await, Some(Bytes::from_static(b"hello")));
        assert_eq!(s.incoming.recv().await, None, "FIN ends the incoming data");
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));
        s.writer
            .write(Bytes::from(vec![1u8; MAX_WRITE_CHUNK + 10]))
            .await
            .expect("write");
        s.writer.close().await.expect("close");
        let mut got = 0;
        loop {
            match client.next().await {
                Some(Frame::Data {
                    stream_id: 1,
                    flags,
                    data,
                }) => {
                    got += data.len();
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, MAX_WRITE_CHUNK + 10);
        session.close().await;
        assert!(matches!(client.next().await, Some(Frame::GoAway { .. })));
        assert_eq!(client.next().await, None);
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_only_that_session() {
        let (mut session, mut client) = pair();
        client
            .io
            .write_all(&[0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0, 0])
            .await
            .expect("write");
        assert!(session.streams.recv().await.is_none());
        // Garbage headers (not zlib) end it too.
        let (mut session, mut client) = pair();
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: Bytes::from_static(b"garbage"),
            })
            .await;
        assert!(session.streams.recv().await.is_none());
        // A second session is unaffected.
        let (mut session, mut client) = pair();
        client.open(3, &[("streamType", "error")]).await;
        assert!(session.streams.recv().await.is_some());
    }

    #[tokio::test]
    async fn duplicate_and_even_stream_ids_are_reset() {
        let (mut session, mut client) = pair();
        client.open(1, &[("a", "b")]).await;
        client.open(1, &[("a", "b")]).await;
        client.open(2, &[("a", "b")]).await;
        let _s = session.streams.recv().await.expect("first");
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert!(matches!(
            client.next().await,
            Some(Frame::RstStream { stream_id: 1, .. })
        ));
        assert!(matches!(
            client.next().await,
            Some(Frame::RstStream { stream_id: 2, .. })
        ));
    }
}
