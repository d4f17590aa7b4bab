//! In-memory fan-out of committed writes to watchers, plus a small ring of recent events
//! so most watches start without touching the database.
//! A slow watcher is cut off (it resumes from its last revision); it never stalls the writer,
//! and what it had queued is released at once, so a stalled client cannot pin memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::error::{Result, StoreError};
use crate::store::{WatchProgress, WatchStream};
use crate::types::{KeyRange, Revision, WatchEvent};

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events a watcher may have queued before it is cut off as lagging.
    pub watcher_buffer: usize,
    /// Bytes of events (keys + values) a watcher may have queued before it is cut off:
    /// with large objects the event count alone would let one stalled watcher pin
    /// gigabytes. A watcher with nothing queued always gets the next event.
    pub watcher_bytes: usize,
    /// Bytes of recent events (keys + values) kept in memory for replay.
    pub recent_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            watcher_buffer: 4096,
            watcher_bytes: 16 << 20,
            recent_bytes: 8 << 20,
        }
    }
}

/// One watcher's queue, shared by the hub (which pushes) and the watcher's stream (which
/// pops). The hub can empty it when it cuts the watcher off.
struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Arc<WatchEvent>>,
    bytes: usize,
    /// Cut off for falling behind: the stream ends with `WatcherLagged`.
    lagged: bool,
    /// The hub closed: the stream ends once drained.
    closed: bool,
    /// The stream was dropped: the hub forgets the slot.
    gone: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Push {
    Queued,
    Lagged,
    Gone,
}

struct Slot {
    range: KeyRange,
    queue: Arc<Queue>,
}

impl Slot {
    fn push(&self, e: &Arc<WatchEvent>, config: &HubConfig) -> Push {
        let mut q = self.queue.lock();
        if q.gone {
            return Push::Gone;
        }
        let size = event_size(e);
        let full = q.events.len() >= config.watcher_buffer.max(1)
            || (!q.events.is_empty() && q.bytes + size > config.watcher_bytes);
        if full {
            q.lagged = true;
            q.events = VecDeque::new();
            q.bytes = 0;
            drop(q);
            self.queue.notify.notify_one();
            return Push::Lagged;
        }
        q.bytes += size;
        q.events.push_back(e.clone());
        drop(q);
        self.queue.notify.notify_one();
        Push::Queued
    }

    fn close(&self) {
        self.queue.lock().closed = true;
        self.queue.notify.notify_one();
    }
}

/// The stream's end of a queue: popping events, and telling the hub when it is dropped.
struct Receiver {
    queue: Arc<Queue>,
}

impl Receiver {
    async fn recv(&self) -> std::result::Result<Arc<WatchEvent>, bool> {
        loop {
            {
                let mut q = self.queue.lock();
                if let Some(e) = q.events.pop_front() {
                    q.bytes = q.bytes.saturating_sub(event_size(&e));
                    return Ok(e);
                }
                if q.lagged {
                    return Err(true);
                }
                if q.closed {
                    return Err(false);
                }
            }
            // notify_one keeps a permit when nobody waits, so a push between the check
            // above and this await is not lost.
            self.queue.notify.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.gone = true;
        q.events = VecDeque::new();
        q.bytes = 0;
    }
}

struct Inner {
    /// Every event with revision <= published has been handed to the hub.
    published: Revision,
    watchers: Vec<Slot>,
    /// Recent events in revision order; complete for revisions >= recent_from.
    recent: VecDeque<Arc<WatchEvent>>,
    recent_from: Revision,
    recent_size: usize,
    closed: bool,
}

pub struct WatchHub {
    inner: Mutex<Inner>,
    config: HubConfig,
}

/// What a new watcher gets: the events it must replay from the ring (if the ring covered
/// its start), the revision up to which replay is needed, and its live feed.
pub struct Subscription {
    pub replayed: Option<Vec<Arc<WatchEvent>>>,
    pub published: Revision,
    rx: Receiver,
}

/// Reads history for replay: events with `from <= revision <= to` in `range`, at most
/// `limit` of them, in revision order.
pub type ReplayFn = Arc<
    dyn Fn(KeyRange, Revision, Revision, usize) -> BoxFuture<'static, Result<Vec<Arc<WatchEvent>>>>
        + Send
        + Sync,
>;

fn event_size(e: &WatchEvent) -> usize {
    64 + e.kv.key.len() + e.kv.value.len() + e.prev_kv.as_ref().map_or(0, |p| p.value.len())
}

impl WatchHub {
    pub fn new(current: Revision, config: HubConfig) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                published: current,
                watchers: Vec::new(),
                recent: VecDeque::new(),
                recent_from: current + 1,
                recent_size: 0,
                closed: false,
            }),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the hub half-updated in a way that
        // matters more than losing all watchers, so recover the guard.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a watcher of `range` that needs every event with revision >= `start`.
    pub fn subscribe(&self, range: KeyRange, start: Revision) -> Result<Subscription> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        inner.watchers.retain(|w| !w.queue.lock().gone);
        let replayed = if start >= inner.recent_from {
            Some(
                inner
                    .recent
                    .iter()
                    .filter(|e| e.revision() >= start && range.contains(&e.kv.key))
                    .cloned()
                    .collect(),
            )
        } else {
            None
        };
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
        });
        inner.watchers.push(Slot {
            range,
            queue: queue.clone(),
        });
        Ok(Subscription {
            replayed,
            published: inner.published,
            rx: Receiver { queue },
        })
    }

    /// Hand committed events (in revision order, all <= `revision`) to every watcher.
    pub fn publish(&self, revision: Revision, events: &[Arc<WatchEvent>]) {
        let mut inner = self.lock();
        for e in events {
            inner.recent_size += event_size(e);
            inner.recent.push_back(e.clone());
        }
        while inner.recent_size > self.config.recent_bytes {
            let Some(old) = inner.recent.pop_front() else {
                break;
            };
            inner.recent_size -= event_size(&old);
            inner.recent_from = inner.recent_from.max(old.revision() + 1);
        }
        inner.published = inner.published.max(revision);
        if events.is_empty() {
            return;
        }
        let config = &self.config;
        inner.watchers.retain(|w| {
            for e in events {
                if !w.range.contains(&e.kv.key) {
                    continue;
                }
                match w.push(e, config) {
                    Push::Queued => {}
                    Push::Lagged | Push::Gone => return false,
                }
            }
            true
        });
    }

    /// End every watcher; later subscriptions fail with `Closed`.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for w in inner.watchers.drain(..) {
            w.close();
        }
    }

    /// The newest revision handed to the hub.
    pub fn published(&self) -> Revision {
        self.lock().published
    }

    pub fn watcher_count(&self) -> usize {
        let inner = self.lock();
        inner
            .watchers
            .iter()
            .filter(|w| !w.queue.lock().gone)
            .count()
    }
}

enum Phase {
    /// Replaying history: next revision needed, up to (inclusive) `until`.
    Replay {
        next: Revision,
        until: Revision,
        buffered: VecDeque<Arc<WatchEvent>>,
    },
    Live,
    Done,
}

struct StreamState {
    range: KeyRange,
    rx: Receiver,
    replay: ReplayFn,
    phase: Phase,
    last: Revision,
    live: Arc<AtomicBool>,
}

const REPLAY_CHUNK: usize = 1024;

/// Build the watcher's stream: replay (from the ring or via `replay`) then live events.
/// `start == 0` means "only changes after now".
pub fn watch_stream(
    range: KeyRange,
    start: Revision,
    sub: Subscription,
    replay: ReplayFn,
) -> WatchStream {
    let start = if start <= 0 { sub.published + 1 } else { start };
    let phase = match sub.replayed {
        Some(events) => Phase::Replay {
            next: sub.published + 1,
            until: sub.published,
            buffered: events.into(),
        },
        None => Phase::Replay {
            next: start,
            until: sub.published,
            buffered: VecDeque::new(),
        },
    };
    let live = Arc::new(AtomicBool::new(false));
    let state = StreamState {
        range,
        rx: sub.rx,
        replay,
        phase,
        last: start - 1,
        live: live.clone(),
    };
    let inner = Box::pin(futures::stream::unfold(state, |mut st| async move {
        let item = next_event(&mut st).await?;
        Some((item, st))
    }));
    WatchStream::new(inner, WatchProgress::after_replay(live))
}

async fn next_event(st: &mut StreamState) -> Option<Result<Arc<WatchEvent>>> {
    loop {
        match &mut st.phase {
            Phase::Done => return None,
            Phase::Replay {
                next,
                until,
                buffered,
            } => {
                if let Some(e) = buffered.pop_front() {
                    st.last = e.revision();
                    return Some(Ok(e));
                }
                if *next > *until {
                    st.phase = Phase::Live;
                    st.live.store(true, Ordering::Release);
                    continue;
                }
                match (st.replay)(st.range.clone(), *next, *until, REPLAY_CHUNK).await {
                    Ok(events) => {
                        if events.len() < REPLAY_CHUNK {
                            *next = *until + 1;
                        } else if let Some(last) = events.last() {
                            // A revision may straddle chunks: re-read it whole next time.
                            let last_rev = last.revision();
                            let whole: VecDeque<_> = events
                                .into_iter()
                                .filter(|e| e.revision() < last_rev)
                                .collect();
                            if whole.is_empty() {
                                // One revision larger than a chunk: take it as read.
                                let all =
                                    (st.replay)(st.range.clone(), last_rev, last_rev, usize::MAX)
                                        .await;
                                match all {
                                    Ok(all) => {
                                        *next = last_rev + 1;
                                        buffered.extend(all);
                                    }
                                    Err(e) => {
                                        st.phase = Phase::Done;
                                        return Some(Err(e));
                                    }
                                }
                                continue;
                            }
                            *next = last_rev;
                            buffered.extend(whole);
                            continue;
                        }
                        buffered.extend(events);
                    }
                    Err(e) => {
                        st.phase = Phase::Done;
                        return Some(Err(e));
                    }
                }
            }
            Phase::Live => match st.rx.recv().await {
                Ok(e) => {
                    st.last = e.revision();
                    return Some(Ok(e));
                }
                Err(lagged) => {
                    st.phase = Phase::Done;
                    if lagged {
                        return Some(Err(StoreError::WatcherLagged {
                            last_revision: st.last,
                        }));
                    }
                    return Some(Err(StoreError::Closed));
                }
            },
        }
    }
}
