//! The policies and bindings in memory: loaded on first use, then re-read whenever a watch
//! on their keys reports a change, so a request reads no policy from the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::compiled::{Binding, Policy, Snapshot};
use crate::AppState;

/// Both kinds' keys share this prefix (`…/validatingadmissionpolicies/`, `…bindings/`).
const PREFIX: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolic";
const POLICIES: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolicies/";

#[derive(Default)]
pub struct Cache {
    snapshot: RwLock<Arc<Snapshot>>,
    started: OnceCell<()>,
}

impl Cache {
    /// The current policies; the first call loads them and starts the watch.
    pub async fn get(self: &Arc<Self>, state: &AppState) -> Arc<Snapshot> {
        self.started
            .get_or_init(|| async {
                let from = state.store.current_revision().await.unwrap_or(0);
                self.reload(state).await;
                spawn(self.clone(), state.clone(), from);
            })
            .await;
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn reload(&self, state: &AppState) {
        let range = KeyRange::prefix(Bytes::from_static(PREFIX.as_bytes()));
        let kvs = match state.store.range(RangeRequest::new(range)).await {
            Ok(r) => r.kvs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read admission policies; keeping the last set");
                return;
            }
        };
        let mut policies = HashMap::new();
        let mut bindings = Vec::new();
        for kv in &kvs {
            let Ok(obj) = crate::limits::parse_stored(&kv.value) else {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "unreadable admission policy object");
                continue;
            };
            if kv.key.starts_with(POLICIES.as_bytes()) {
                let p = Policy::from_json(&obj);
                policies.insert(p.name.clone(), Arc::new(p));
            } else {
                bindings.push(Arc::new(Binding::from_json(&obj)));
            }
        }
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        let pairs = bindings
            .into_iter()
            .filter_map(|b| Some((policies.get(&b.policy_name)?.clone(), b)))
            .collect::<Vec<_>>();
        tracing::debug!(bindings = pairs.len(), "admission policies loaded");
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot { pairs });
    }
}

/// Re-read the set after every change from revision `from` on, until the store closes.
fn spawn(cache: Arc<Cache>, state: AppState, mut from: i64) {
    tokio::spawn(async move {
        loop {
            let range = KeyRange::prefix(Bytes::from_static(PREFIX.as_bytes()));
            match state.store.watch(range, from + 1).await {
                Ok(mut w) => {
                    // A cut-off watch (None or Err) is re-opened after a fresh read.
                    while let Some(Ok(ev)) = w.next().await {
                        from = from.max(ev.kv.mod_revision);
                        cache.reload(&state).await;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            match state.store.current_revision().await {
                Ok(rev) => {
                    cache.reload(&state).await;
                    from = rev;
                }
                Err(_) => return,
            }
        }
    });
}
