//! Shared informers: one watch and one in-memory store per kind that several loops need
//! (pods, nodes), fanned out to each loop's trigger stream, so N loops cost one copy of
//! every pod rather than N (upstream's SharedInformerFactory).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
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
    /// True once the first list is in the store. (kube's `Store::wait_until_ready` wakes
    /// only the last of several concurrent waiters, so loops wait on this instead.)
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
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
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut changes =
                reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                    .default_backoff()
                    .boxed();
            while let Some(change) = changes.next().await {
                match change {
                    Ok(Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj)) => {
                        let _ = feed.send(Arc::new(obj));
                    }
                    Ok(Event::InitDone) => {
                        ready_tx.send_replace(true);
                    }
                    Ok(Event::Init) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, kind = %K::kind(&()), "informer watch error")
                    }
                }
            }
        });
        Shared {
            store,
            tx,
            ready,
            task,
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

    /// Wait until the first list is in the store.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Re-exported so loops name one place for reflector types.
pub use reflector::ObjectRef;
