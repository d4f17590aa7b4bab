//! Shared informers: one watch and one in-memory store per kind that several loops need
//! (pods, nodes), fanned out to each loop's trigger stream, so N loops cost one copy of
//! every pod rather than N (upstream's SharedInformerFactory).

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use capstan_slim::WatchApi;
use futures::{Stream, StreamExt, TryStreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::owner_index::OwnerIndex;

/// Changes held for a loop that has not taken them yet; one that falls further behind
/// misses changes (logged) and relies on its own periodic resync.
const FAN_OUT_BUFFER: usize = 1 << 16;

/// One kind's store (read by every loop) and its change feed.
pub struct Shared<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    tx: broadcast::Sender<Arc<K>>,
    task: JoinHandle<()>,
    ready: Ready,
    /// Objects by controller, when asked for (`start_indexed`).
    owners: Option<Arc<RwLock<OwnerIndex<K>>>>,
}

/// "The store has its first list", awaitable by any number of tasks at once. kube's
/// `Store::wait_until_ready` wakes only the last of several tasks waiting at the same time
/// (one waker slot), so the others would wait forever: loops must await this instead.
#[derive(Clone)]
pub struct Ready(watch::Receiver<bool>);

impl Ready {
    /// Readiness of `store`: one task waits on it and tells everyone.
    pub fn of<K>(store: &Store<K>) -> Ready
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
    {
        let (tx, rx) = watch::channel(false);
        let store = store.clone();
        tokio::spawn(async move {
            // Err: the writer is gone (its informer stopped); waiting longer helps no one.
            let _ = store.wait_until_ready().await;
            let _ = tx.send(true);
        });
        Ready(rx)
    }

    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watch every `K` the api reaches, into a store, fanned out to subscribers.
    pub fn start(api: WatchApi<K>) -> Self {
        Self::start_trimmed(api, |_| {})
    }

    /// As `start`, with `trim` applied to every object before it is stored: fields no loop
    /// reads need not be held once per object for as long as it exists.
    pub fn start_trimmed(api: WatchApi<K>, trim: fn(&mut K)) -> Self {
        Self::start_with(api, trim, false)
    }

    /// As `start_trimmed`, with an index by controller (`controlled_by`, `orphans_in`).
    pub fn start_indexed(api: WatchApi<K>, trim: fn(&mut K)) -> Self {
        Self::start_with(api, trim, true)
    }

    fn start_with(api: WatchApi<K>, trim: fn(&mut K), indexed: bool) -> Self {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(FAN_OUT_BUFFER);
        let feed = tx.clone();
        let owners = indexed.then(|| Arc::new(RwLock::new(OwnerIndex::default())));
        let (index, before) = (owners.clone(), store.clone());
        let task = tokio::spawn(async move {
            // managedFields are never read by a loop (a write that omits them keeps the
            // stored ones): `Slim` skips them while decoding (upstream's informers drop them
            // with a transform, after decoding, for the same reason).
            let events = capstan_slim::watch(api, watcher::Config::default())
                .map_ok(move |ev| ev.modify(trim))
                // The index sees each event before the store applies it (so it still finds
                // an object's previous controller there) and after (to hold the stored one).
                .inspect_ok({
                    let (index, store) = (index.clone(), before.clone());
                    move |ev| {
                        if let Some(ix) = &index {
                            ix.write()
                                .unwrap_or_else(|p| p.into_inner())
                                .before(ev, &store);
                        }
                    }
                });
            let mut changes = reflector::reflector(writer, events)
                .inspect_ok(move |ev| {
                    if let Some(ix) = &index {
                        ix.write()
                            .unwrap_or_else(|p| p.into_inner())
                            .after(ev, &before);
                    }
                })
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
        let ready = Ready::of(&store);
        Shared {
            store,
            tx,
            task,
            ready,
            owners,
        }
    }

    /// The objects of `ns` whose controller has `uid` (a scan of the store without the index).
    pub fn controlled_by(&self, ns: &str, uid: &str) -> Vec<Arc<K>> {
        match &self.owners {
            Some(ix) => ix
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .controlled_by(ns, uid),
            None => self.scan(ns, |o| crate::owners::is_controlled_by(o.meta(), uid)),
        }
    }

    /// The objects of `ns` that no controller owns and `keep` accepts (a selector, say).
    pub fn orphans_in(&self, ns: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        match &self.owners {
            Some(ix) => ix
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .orphans_in(ns, keep),
            None => self.scan(ns, |o| {
                crate::owners::controller_of(o.meta()).is_none() && keep(o)
            }),
        }
    }

    /// What a controller with `uid` may claim in `ns`: the objects it controls and the
    /// orphans `keep` (its selector) accepts.
    pub fn claimable(&self, ns: &str, uid: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let mut out = self.controlled_by(ns, uid);
        out.extend(self.orphans_in(ns, keep));
        out
    }

    fn scan(&self, ns: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref().unwrap_or("") == ns && keep(o))
            .collect()
    }

    /// Every object the store holds now, then every change (created, updated, deleted
    /// objects), for a Controller's `for_shared_stream` / `watches_shared_stream`. As
    /// upstream's informers hand a new handler each object they hold as an add: a loop
    /// started after the first list must still see what exists (a node whose kubelet was
    /// gone across a restart stayed Ready, no loop having looked at it). Subscribing
    /// before reading the store means an object changed meanwhile may come twice, never
    /// not at all.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let rx = self.tx.subscribe();
        let existing = futures::stream::iter(self.store.state());
        existing.chain(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((obj, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, kind = %K::kind(&()), "a loop fell behind its informer")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    /// Wait until the first list is in the store (any number of tasks may wait at once).
    pub async fn ready(&self) {
        self.ready.wait().await
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Re-exported so loops name one place for reflector types.
pub use reflector::ObjectRef;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_sees_readiness() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let ready = Ready::of(&store);
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let r = ready.clone();
                tokio::spawn(async move { r.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter was never woken")
                .expect("waiter");
        }
    }
}
