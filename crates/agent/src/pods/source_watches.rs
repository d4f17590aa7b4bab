//! Watches of the ConfigMaps and Secrets that pods on this node project into volumes: one
//! watch per object, shared by every pod using it and ended with its last user (as the
//! kubelet's `Watch` change-detection strategy), waking those pods' workers on any change.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The kinds of object a volume projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

/// One watched object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
}

/// The ConfigMaps and Secrets the pod's volumes read (env sources are read once, at
/// container start, as upstream: they are not watched).
pub fn volume_sources(pod: &Pod) -> BTreeSet<SourceKey> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let key = |kind, name: &str| SourceKey {
        kind,
        namespace: namespace.clone(),
        name: name.to_string(),
    };
    let mut out = BTreeSet::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.insert(key(SourceKind::ConfigMap, &cm.name));
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            out.insert(key(SourceKind::Secret, name));
        }
        let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        for s in sources.into_iter().flatten() {
            if let Some(cm) = &s.config_map {
                out.insert(key(SourceKind::ConfigMap, &cm.name));
            }
            if let Some(sec) = &s.secret {
                out.insert(key(SourceKind::Secret, &sec.name));
            }
        }
    }
    out.retain(|k| !k.name.is_empty());
    out
}

struct Entry {
    subscribers: HashMap<u64, Arc<Notify>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    entries: HashMap<SourceKey, Entry>,
}

/// Every watch of the node's pods' volume sources.
#[derive(Clone)]
pub struct SourceWatches {
    client: kube::Client,
    registry: Arc<Mutex<Registry>>,
}

/// A pod worker's interest in its sources: dropping it ends the watches no one else uses.
pub struct Subscription {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    keys: BTreeSet<SourceKey>,
}

impl Subscription {
    pub fn keys(&self) -> &BTreeSet<SourceKey> {
        &self.keys
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A panic while holding this lock leaves plain maps behind: still usable.
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SourceWatches {
    pub fn new(client: kube::Client) -> SourceWatches {
        SourceWatches {
            client,
            registry: Arc::default(),
        }
    }

    /// `notify` is woken whenever one of `keys` changes (and once when a new watch has
    /// listed, so a change between the caller's read and the watch start is not missed).
    /// Subscribe before reading the objects.
    pub fn subscribe(&self, keys: BTreeSet<SourceKey>, notify: Arc<Notify>) -> Subscription {
        let mut reg = lock(&self.registry);
        reg.next_id += 1;
        let id = reg.next_id;
        for key in &keys {
            let entry = reg.entries.entry(key.clone()).or_insert_with(|| Entry {
                subscribers: HashMap::new(),
                task: tokio::spawn(watch_object(
                    self.client.clone(),
                    key.clone(),
                    self.registry.clone(),
                )),
            });
            entry.subscribers.insert(id, notify.clone());
        }
        Subscription {
            registry: self.registry.clone(),
            id,
            keys,
        }
    }

    /// How many objects are watched now.
    pub fn watched(&self) -> usize {
        lock(&self.registry).entries.len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry);
        for key in &self.keys {
            let Some(entry) = reg.entries.get_mut(key) else {
                continue;
            };
            entry.subscribers.remove(&self.id);
            if entry.subscribers.is_empty() {
                if let Some(entry) = reg.entries.remove(key) {
                    entry.task.abort();
                }
            }
        }
    }
}

fn wake(registry: &Mutex<Registry>, key: &SourceKey) {
    let reg = lock(registry);
    if let Some(entry) = reg.entries.get(key) {
        for notify in entry.subscribers.values() {
            notify.notify_one();
        }
    }
}

async fn watch_object(client: kube::Client, key: SourceKey, registry: Arc<Mutex<Registry>>) {
    match key.kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client, &key.namespace);
            watch_typed(api, &key, &registry).await;
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client, &key.namespace);
            watch_typed(api, &key, &registry).await;
        }
    }
}

async fn watch_typed<K>(api: Api<K>, key: &SourceKey, registry: &Mutex<Registry>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut events = capstan_slim::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            // Every (re)list ends in InitDone: what changed while not watching is caught then.
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => wake(registry, key),
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(e) => {
                tracing::warn!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, error = %e, "watching a volume source failed; retrying with back-off");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_come_from_configmap_secret_and_projected_volumes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "a", "configMap": {"name": "cm1"}},
                {"name": "b", "secret": {"secretName": "s1"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "s2"}},
                    {"serviceAccountToken": {"path": "token"}}
                ]}},
                {"name": "d", "emptyDir": {}},
                {"name": "e", "secret": {}}
            ]}
        }))
        .unwrap();
        let got: Vec<(SourceKind, String)> = volume_sources(&pod)
            .into_iter()
            .inspect(|k| assert_eq!(k.namespace, "ns"))
            .map(|k| (k.kind, k.name))
            .collect();
        assert_eq!(
            got,
            vec![
                (SourceKind::ConfigMap, "cm1".to_string()),
                (SourceKind::ConfigMap, "kube-root-ca.crt".to_string()),
                (SourceKind::Secret, "s1".to_string()),
                (SourceKind::Secret, "s2".to_string()),
            ]
        );
    }
}
