//! The node's view of Services: one watch over every Service feeding a reflector store,
//! read by the pod workers (service-link env vars), so they do not list Services per pod.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

/// A shared, cheaply cloned handle on the cache.
#[derive(Clone)]
pub struct ServiceCache {
    store: Store<Service>,
    changes: watch::Receiver<u64>,
}

impl ServiceCache {
    /// Starts the watch (a task that runs for the life of the runtime).
    pub fn start(client: kube::Client) -> ServiceCache {
        let (store, writer) = reflector::store();
        let (tx, changes) = watch::channel(0u64);
        let api: Api<Service> = Api::all(client);
        let stream = reflector::reflector(
            writer,
            capstan_slim::watcher(api, watcher::Config::default()).default_backoff(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => tx.send_modify(|n| *n += 1),
                    Err(e) => {
                        tracing::warn!(error = %e, "service watch failed; retrying with back-off")
                    }
                }
            }
        });
        ServiceCache { store, changes }
    }

    /// Waits (at most `within`) for the first full listing; false if it has not come.
    pub async fn ready(&self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.store.wait_until_ready()).await,
            Ok(Ok(()))
        )
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Services of a namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.store
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
    }

    /// Changes when any Service changes (after the first listing).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}
