//! One store watch = one etcd watch (with previous values and progress notifications),
//! pumped by a task into a bounded channel. A broken etcd stream (a member gone, a leader
//! lost) is re-opened from the next revision, so the watcher sees no gap or repeat.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchClient, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::convert_kv;
use super::errors::{from_etcd, Context};
use crate::error::{Result, StoreError};
use crate::store::{WatchProgress, WatchStream};
use crate::types::{EventKind, Revision, WatchEvent};

/// How long a broken watch keeps trying to re-open before it ends with the error (the
/// watcher then resumes from its last revision, as from any cut-off).
const RESUME_FOR: Duration = Duration::from_secs(30);
/// Events queued for a watcher before the pump waits (and etcd's flow control holds the rest).
const QUEUE: usize = 256;

pub struct Target {
    pub client: WatchClient,
    pub key: Vec<u8>,
    pub end: Vec<u8>,
    pub prefix_len: usize,
    pub timeout: Duration,
    pub compacted: Arc<AtomicI64>,
}

/// Open the watch: the first etcd watch is made here, so an unreachable etcd is the
/// caller's error, not a stream that ends at once.
pub async fn open(target: Target, start: Revision) -> Result<WatchStream> {
    let (stream, created_at) = create(&target, start).await?;
    // "From now" starts after the revision etcd created the watch at.
    let next = if start > 0 { start } else { created_at + 1 };
    let progress = Arc::new(AtomicI64::new(next - 1));
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(target, stream, next, progress.clone(), tx));
    Ok(WatchStream::new(
        Box::pin(ReceiverStream::new(rx)),
        WatchProgress::reported(progress),
    ))
}

type Sender = mpsc::Sender<Result<Arc<WatchEvent>>>;

/// Create an etcd watch from `start` (0: from now) and wait for etcd to confirm it;
/// returns the stream and the revision it was created at.
async fn create(t: &Target, start: Revision) -> Result<(etcd_client::WatchStream, Revision)> {
    let options = WatchOptions::new()
        .with_range(t.end.clone())
        .with_prev_key()
        .with_progress_notify()
        .with_start_revision(start);
    let mut client = t.client.clone().max_decoding_message_size(1 << 30);
    let opened = tokio::time::timeout(t.timeout, async {
        let mut stream = client.watch(t.key.clone(), Some(options)).await?;
        let first = stream.message().await?;
        Ok::<_, etcd_client::Error>((stream, first))
    })
    .await
    .map_err(|_| {
        StoreError::Unavailable(format!("etcd did not open a watch within {:?}", t.timeout))
    })?
    .map_err(|e| from_etcd(e, Context::Read))?;
    let (stream, first) = opened;
    match first {
        Some(r) if r.canceled() => Err(cancelled(t, &r, start)),
        Some(r) if r.created() => Ok((stream, r.header().map_or(0, |h| h.revision()))),
        Some(_) => Err(StoreError::Backend(
            "etcd answered a watch request without creating it".into(),
        )),
        None => Err(StoreError::Unavailable(
            "etcd closed the watch stream before creating the watch".into(),
        )),
    }
}

/// What a cancelled watch means: compaction past its revision is final, anything else
/// (no leader, member shutting down) is worth re-opening.
fn cancelled(t: &Target, r: &etcd_client::WatchResponse, next: Revision) -> StoreError {
    if r.compact_revision() > 0 {
        // etcd keeps the compaction revision itself readable; this store's watches start
        // after it, as the SQLite backend's do.
        let compacted = r.compact_revision();
        t.compacted.fetch_max(compacted, Ordering::AcqRel);
        return StoreError::Compacted {
            requested: next,
            oldest_available: compacted + 1,
        };
    }
    StoreError::Unavailable(format!("etcd cancelled the watch: {}", r.cancel_reason()))
}

enum Ended {
    /// The watcher dropped its stream.
    Gone,
    /// The etcd stream broke: re-open from the next revision.
    Broken(StoreError),
    /// Nothing more can be delivered: tell the watcher.
    Fatal(StoreError),
}

async fn run(
    t: Target,
    mut stream: etcd_client::WatchStream,
    mut next: Revision,
    progress: Arc<AtomicI64>,
    tx: Sender,
) {
    loop {
        let why = match pump(&t, &mut stream, &mut next, &progress, &tx).await {
            Ended::Gone => return,
            Ended::Fatal(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ended::Broken(why) => why,
        };
        tracing::debug!(error = %why, next, "etcd watch broke; re-opening");
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        stream = loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match create(&t, next).await {
                Ok((s, _)) => break s,
                Err(e @ StoreError::Compacted { .. }) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) if started.elapsed() >= RESUME_FOR => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(_) => pause = (pause * 2).min(Duration::from_secs(1)),
            }
        };
    }
}

/// Move events from etcd to the watcher until one side ends. `next` is the first
/// revision not yet delivered; `progress` what the watcher may be told it has seen.
async fn pump(
    t: &Target,
    stream: &mut etcd_client::WatchStream,
    next: &mut Revision,
    progress: &AtomicI64,
    tx: &Sender,
) -> Ended {
    loop {
        let message = tokio::select! {
            _ = tx.closed() => return Ended::Gone,
            m = stream.message() => m,
        };
        let resp = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Ended::Broken(StoreError::Unavailable("etcd ended the watch".into()))
            }
            Err(e) => return Ended::Broken(from_etcd(e, Context::Read)),
        };
        if resp.canceled() {
            return match cancelled(t, &resp, *next) {
                e @ StoreError::Compacted { .. } => Ended::Fatal(e),
                e => Ended::Broken(e),
            };
        }
        let events = resp.events();
        if events.is_empty() {
            // A progress notification: etcd has sent every change up to its revision.
            if !resp.created() {
                if let Some(rev) = resp.header().map(|h| h.revision()) {
                    if rev >= *next {
                        *next = rev + 1;
                        progress.fetch_max(rev, Ordering::AcqRel);
                    }
                }
            }
            continue;
        }
        // etcd never splits one revision's events across responses (without fragments),
        // so after this batch everything up to its last revision has been delivered.
        let mut last = *next - 1;
        for e in events {
            let Some(kv) = e.kv() else { continue };
            let kv = convert_kv(kv, t.prefix_len);
            let rev = kv.mod_revision;
            if rev < *next {
                continue;
            }
            let event = WatchEvent {
                kind: match e.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                },
                kv,
                prev_kv: e.prev_kv().map(|p| convert_kv(p, t.prefix_len)),
            };
            if tx.send(Ok(Arc::new(event))).await.is_err() {
                return Ended::Gone;
            }
            last = rev;
        }
        if last >= *next {
            *next = last + 1;
            progress.fetch_max(last, Ordering::AcqRel);
        }
    }
}
