//! Shared informers: one watch and one in-memory store per kind that several loops need
//! (pods, nodes), fanned out to each loop's trigger stream, so N loops cost one copy of
//! every pod rather than N (upstream's SharedInformerFactory).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Changes held for a loop that has not taken them yet; one that falls further behind
/// misses changes (logged) and relies on its own periodic resync.
const FAN_OUT_BUFFER: usize = 1 << 16;

/// One kind's store (read by every loop) and its change feed.
pub struct Shared<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    tx: broadcast::Sender<Arc<K>>,
    task: JoinHandle<()>,
    ready: watch::Receiver<bool>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watch every `K` the api reaches, into a store, fanned out to subscribers.
    pub fn start(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(FAN_OUT_BUFFER);
        let feed = tx.clone();
        let task = tokio::spawn(async move {
            let mut changes =
                reflector::reflector(writer, watcher(api, watcher::Config::default()))
                    .default_backoff()
                    .touched_objects()
                    .boxed();
            while let Some(change) = changes.next().await {
                match change {
                    Ok(obj) => {
                        let _ = feed.send(Arc::new(obj));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, kind = %K::kind(&()), "informer watch error")
                    }
                }
            }
        });
        let ready = ready_flag(&store);
        Shared {
            store,
            tx,
            task,
            ready,
        }
    }

    /// Every change from now on (created, updated, deleted objects), for a Controller's
    /// `owns_shared_stream` / `watches_shared_stream`.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((obj, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, kind = %K::kind(&()), "a loop fell behind its informer")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Wait until the first list is in the store (any number of loops may wait at once).
    pub async fn ready(&self) {
        wait_ready(&self.ready).await
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A flag set once `store` has its first list. kube's `Store::wait_until_ready` wakes only
/// the last of several tasks waiting at once (they share one oneshot receiver, which keeps
/// one waker): the others would wait forever. One task waits on it here; any number may
/// wait on the flag with [`wait_ready`].
pub fn ready_flag<K>(store: &Store<K>) -> watch::Receiver<bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let (tx, rx) = watch::channel(false);
    let store = store.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    rx
}

/// Wait until a [`ready_flag`] is set (or its store's writer is gone).
pub async fn wait_ready(flag: &watch::Receiver<bool>) {
    let mut rx = flag.clone();
    let _ = rx.wait_for(|ready| *ready).await;
}

/// Re-exported so loops name one place for reflector types.
pub use reflector::ObjectRef;
