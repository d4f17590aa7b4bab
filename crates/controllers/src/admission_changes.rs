//! Changes to what pod admission checks against (ResourceQuota, LimitRange, PriorityClass) as
//! one shared feed of scopes, so loops holding refused creates retry as soon as the cause may be gone.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Where admission may now accept what it refused before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace's quotas or limit ranges changed.
    Namespace(String),
    /// A cluster-scoped policy changed (a PriorityClass), or the feed re-listed and may have
    /// missed changes: every namespace.
    All,
}

impl Scope {
    /// Whether an object keyed `namespace/name` is in scope.
    pub fn covers(&self, key: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => key
                .split_once('/')
                .is_some_and(|(kns, _)| kns == ns.as_str()),
        }
    }
}

/// The running feed; dropped with its context (ends its watches).
pub struct AdmissionChanges {
    tx: broadcast::Sender<Scope>,
    task: JoinHandle<()>,
}

impl AdmissionChanges {
    pub fn start(client: Client) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let feed = tx.clone();
        let task = tokio::spawn(async move {
            let mut quotas = QuotaFilter::default();
            let mut changes = futures::stream::select_all([
                events(Api::<ResourceQuota>::all(client.clone()))
                    .filter_map(move |ev| std::future::ready(quotas.scope_of(ev)))
                    .boxed(),
                events(Api::<LimitRange>::all(client.clone()))
                    .filter_map(|ev| std::future::ready(namespaced_change(ev)))
                    .boxed(),
                events(Api::<PriorityClass>::all(client.clone()))
                    .filter_map(|ev| {
                        std::future::ready(match ev {
                            Change::Applied(_) | Change::Deleted(_) | Change::Relisted => {
                                Some(Scope::All)
                            }
                            Change::Listed(_) => None,
                        })
                    })
                    .boxed(),
            ]);
            while let Some(scope) = changes.next().await {
                tracing::debug!(?scope, "admission policy changed");
                let _ = feed.send(scope);
            }
        });
        AdmissionChanges { tx, task }
    }

    /// Scopes changed from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Scope> + Send + 'static {
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(s) => Some((s, rx)),
                // Fell behind: whatever was missed, everything may be unblocked.
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Scope::All, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

impl Drop for AdmissionChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One watch event, with the first list told apart from later changes.
enum Change<K> {
    /// Part of the first list: the state admission already refused against.
    Listed(K),
    Applied(K),
    Deleted(K),
    /// A later re-list (the watch broke): changes may have been missed.
    Relisted,
}

fn events<K>(api: Api<K>) -> impl Stream<Item = Change<K>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let mut lists = 0u32;
    capstan_slim::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |ev| {
            let change = match ev {
                Ok(watcher::Event::InitApply(o)) => Some(Change::Listed(o)),
                Ok(watcher::Event::Apply(o)) => Some(Change::Applied(o)),
                Ok(watcher::Event::Delete(o)) => Some(Change::Deleted(o)),
                Ok(watcher::Event::InitDone) => {
                    lists += 1;
                    (lists > 1).then_some(Change::Relisted)
                }
                Ok(watcher::Event::Init) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "admission policy watch error");
                    None
                }
            };
            std::future::ready(change)
        })
}

fn namespaced_change<K: Resource>(ev: Change<K>) -> Option<Scope> {
    match ev {
        Change::Applied(o) | Change::Deleted(o) => Some(Scope::Namespace(
            o.meta().namespace.clone().unwrap_or_default(),
        )),
        Change::Relisted => Some(Scope::All),
        Change::Listed(_) => None,
    }
}

/// A quota frees room when its `status.hard` changes or some `used` goes down (a pod ended); a
/// `used` going up is admission charging a create, which frees nothing (and is the loops'
/// own success: reacting to it would wake them for nothing).
#[derive(Default)]
struct QuotaFilter {
    seen: HashMap<String, (String, HashMap<String, i64>)>,
}

impl QuotaFilter {
    fn scope_of(&mut self, ev: Change<ResourceQuota>) -> Option<Scope> {
        let (q, listed) = match ev {
            Change::Relisted => return Some(Scope::All),
            Change::Deleted(q) => {
                self.seen.remove(&crate::pods::key(&q.metadata));
                return Some(Scope::Namespace(q.metadata.namespace.unwrap_or_default()));
            }
            Change::Listed(q) => (q, true),
            Change::Applied(q) => (q, false),
        };
        let key = crate::pods::key(&q.metadata);
        // Admission checks against `status.hard` (the quota controller copies the spec
        // there): a raised spec is room only once it shows in the status.
        let hard = serde_json::to_string(&q.status.as_ref().map(|s| &s.hard)).unwrap_or_default();
        let used: HashMap<String, i64> = q
            .status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .map(|u| {
                u.iter()
                    .map(|(k, v)| (k.clone(), capstan_scheduler::quantity::milli(&v.0)))
                    .collect()
            })
            .unwrap_or_default();
        let freed = match self.seen.get(&key) {
            None => !listed,
            Some((old_hard, old_used)) => {
                *old_hard != hard
                    || old_used
                        .iter()
                        .any(|(k, was)| used.get(k).is_none_or(|now| now < was))
            }
        };
        self.seen.insert(key, (hard, used));
        freed.then(|| Scope::Namespace(q.metadata.namespace.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota(hard: &str, used: &str) -> ResourceQuota {
        serde_json::from_value(json!({
            "metadata": {"name": "q", "namespace": "ns"},
            "spec": {"hard": {"pods": "0"}},
            "status": {"hard": {"pods": hard}, "used": {"pods": used}},
        }))
        .unwrap()
    }

    #[test]
    fn a_quota_frees_room_when_raised_or_usage_falls_not_when_charged() {
        let mut f = QuotaFilter::default();
        let ns = Some(Scope::Namespace("ns".into()));
        assert_eq!(f.scope_of(Change::Listed(quota("1", "1"))), None);
        assert_eq!(f.scope_of(Change::Applied(quota("1", "1"))), None);
        assert_eq!(f.scope_of(Change::Applied(quota("3", "1"))), ns);
        assert_eq!(f.scope_of(Change::Applied(quota("3", "2"))), None);
        assert_eq!(f.scope_of(Change::Applied(quota("3", "1"))), ns);
        assert_eq!(f.scope_of(Change::Deleted(quota("3", "1"))), ns);
        assert_eq!(f.scope_of(Change::Relisted), Some(Scope::All));
    }

    #[test]
    fn scopes_cover_their_namespace() {
        assert!(Scope::Namespace("a".into()).covers("a/x"));
        assert!(!Scope::Namespace("a".into()).covers("ab/x"));
        assert!(Scope::All.covers("b/y"));
    }
}
