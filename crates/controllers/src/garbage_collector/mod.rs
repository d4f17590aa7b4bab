//! The garbage collector (upstream's `garbage-collector` controller): deletes objects all of
//! whose owners are gone, and finishes Foreground and Orphan deletions of owners.
//!
//! `monitors` watch every deletable resource's metadata into the `graph`; graph changes queue
//! objects for the `workers`, which check owners against the API server before acting.

pub mod graph;
mod monitors;
pub mod queue;
pub mod resources;
mod workers;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::backoff::Backoff;
use crate::events::Recorder;
use crate::Context;
use graph::{Effects, Graph, Uid};
use monitors::Task;
use queue::Queue;
use resources::Resources;

/// Absent and orphaned owners remembered (upstream's absentOwnerCache holds 500).
const REMEMBERED: usize = 4096;
/// Retry of a failed item: upstream's controller rate limiter (5 ms doubling to 1000 s).
const RETRY_BASE: Duration = Duration::from_millis(5);
const RETRY_CAP: Duration = Duration::from_secs(1000);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no served resource has kind {kind} in {api_version}")]
    UnknownOwnerKind { api_version: String, kind: String },
}

/// What the monitors and workers share.
pub struct Gc {
    pub client: kube::Client,
    /// `client` asking for PartialObjectMetadata: the monitors' lists and watches.
    metadata_client: kube::Client,
    graph: Mutex<Graph>,
    resources: RwLock<Arc<Resources>>,
    delete_q: Arc<Queue<Uid>>,
    orphan_q: Arc<Queue<Uid>>,
    absent: Remembered,
    /// Owners this GC orphaned. A dependent it sees only after its owner went (created just
    /// before the owner's deletion, its watch event behind the owner's) was orphaned too:
    /// it loses the reference rather than being deleted as dangling.
    orphaned: Remembered,
    backoff: Backoff,
    recorder: Recorder,
}

impl Gc {
    fn new(ctx: &Context) -> Self {
        Gc {
            client: ctx.client.clone(),
            metadata_client: monitors::metadata_client(ctx.client.clone()),
            graph: Mutex::new(Graph::default()),
            resources: RwLock::new(Arc::new(Resources::default())),
            delete_q: Arc::new(Queue::new()),
            orphan_q: Arc::new(Queue::new()),
            absent: Remembered::default(),
            orphaned: Remembered::default(),
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
            recorder: ctx.recorder("garbage-collector-controller"),
        }
    }

    pub fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resources(&self) -> Arc<Resources> {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_resources(&self, r: Arc<Resources>) {
        *self.resources.write().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// Queue what a graph change asks for.
    fn enqueue(&self, fx: Effects) {
        for u in fx.attempt_delete {
            self.delete_q.add(u);
        }
        for u in fx.attempt_orphan {
            self.orphan_q.add(u);
        }
    }

    /// The API server says `uid` is gone: drop it from the graph (its watch may lag).
    fn forget(&self, uid: &str) {
        let mut fx = Effects::default();
        self.graph().remove(uid, &mut fx);
        self.enqueue(fx);
    }

    fn is_absent(&self, key: &str) -> bool {
        self.absent.contains(key)
    }

    fn note_absent(&self, key: String) {
        self.absent.insert(key);
    }

    fn was_orphaned(&self, uid: &str) -> bool {
        self.orphaned.contains(uid)
    }

    fn note_orphaned(&self, uid: &str) {
        self.orphaned.insert(uid.to_string());
    }
}

/// Keys remembered up to `REMEMBERED`, then all forgotten at once: what they record never
/// changes (a uid never comes back), and forgetting costs only a check with the server.
#[derive(Default)]
struct Remembered(Mutex<HashSet<String>>);

impl Remembered {
    fn contains(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn insert(&self, key: String) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= REMEMBERED {
            set.clear();
        }
        set.insert(key);
    }
}

/// Run the garbage collector until aborted: build the graph, then work its queues.
pub async fn run(ctx: Arc<Context>) {
    let gc = Arc::new(Gc::new(&ctx));
    let (synced_tx, synced) = oneshot::channel();
    let _monitors = Task(tokio::spawn(monitors::run(gc.clone(), synced_tx)));
    if synced.await.is_err() {
        return;
    }
    let workers = ctx.opts.concurrent_gc_syncs.max(1);
    let mut tasks: Vec<Task> = (0..workers)
        .map(|_| Task(tokio::spawn(workers::work(gc.clone(), false))))
        .collect();
    tasks.extend(
        (0..workers.div_ceil(4)).map(|_| Task(tokio::spawn(workers::work(gc.clone(), true)))),
    );
    tracing::info!(workers, "garbage collector: running");
    // Everything runs in the tasks; dropping them (when this is aborted) stops them.
    std::future::pending::<()>().await;
    drop(tasks);
}
