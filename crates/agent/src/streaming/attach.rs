//! Attach sessions (`/attach/...`): the client's streams wired to the running container's own
//! stdio through its shim's attach socket; output until the container or the client ends.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::remotecommand::{self, ExecIo, ExecOptions, Outcome};
use crate::runtime::attach::{self as wire, frame, take_frames};

/// Runs one attach session; the end of the container's output (its exit) ends it.
pub async fn run(socket: UnixStream, opts: &ExecOptions, mut io: ExecIo) {
    let (mut rd, mut wr) = socket.into_split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    if let Some(mut stdin) = io.stdin.take() {
        let tx = frames_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(data) = stdin.recv().await {
                for chunk in data.chunks(wire::MAX_PAYLOAD) {
                    if tx.send(frame(wire::STDIN, chunk)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(frame(wire::STDIN_CLOSE, &[])).await;
        }));
    }
    if let Some(mut resize) = io.resize.take() {
        let tx = frames_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(data) = resize.recv().await {
                pending.extend_from_slice(&data);
                for (w, h) in remotecommand::sizes(&mut pending) {
                    let mut size = w.to_be_bytes().to_vec();
                    size.extend_from_slice(&h.to_be_bytes());
                    if tx.send(frame(wire::RESIZE, &size)).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(frames_tx);
    let mut inbound = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let gone = remotecommand::client_gone(io.gone.take());
    tokio::pin!(gone);
    let ended = 'copy: loop {
        let read = tokio::select! {
            r = rd.read(&mut buf) => r,
            // The client left: the container runs on, detached again.
            () = &mut gone => break "the client left",
        };
        let n = match read {
            Ok(0) => break "the container's output ended",
            Err(_) => break "the attach socket failed",
            Ok(n) => n,
        };
        inbound.extend_from_slice(&buf[..n]);
        let Ok(frames) = take_frames(&mut inbound) else {
            break "the shim sent a bad frame";
        };
        for (kind, payload) in frames {
            let out = match kind {
                wire::STDOUT => io.stdout.as_ref(),
                wire::STDERR => io.stderr.as_ref(),
                _ => None,
            };
            if let Some(out) = out {
                if !out.write(Bytes::from(payload)).await {
                    break 'copy "the client stopped reading";
                }
            }
        }
    };
    tracing::debug!(ended, "attach session over");
    for t in tasks {
        t.abort();
    }
    writer.abort();
    for out in [io.stdout.take(), io.stderr.take()].into_iter().flatten() {
        out.close().await;
    }
    if let Some(error) = io.error.take() {
        let body = remotecommand::status_json(&opts.command, &Outcome::Exited(0)).to_string();
        let _ = error.write(Bytes::from(body)).await;
        error.close().await;
    }
}
