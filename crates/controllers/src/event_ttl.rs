//! Event expiry (upstream's `--event-ttl`, 1 hour): an Event not written for the TTL is
//! deleted. A sweep over a store of every Event's name and times, not a reconcile per Event.
//!
//! Upstream puts each Event under an etcd lease, and the API server shares one lease among the
//! Events written within a minute (`--lease-reuse-duration-seconds`), so expiry is already that
//! coarse there. A sweep every `ttl / 10` (1 s to 30 s) matches it, holds only names and times
//! (one pod makes several Events: 30,000 pods were ~65 MB of held Events and their per-Event
//! requeue timers), and does no work per Event written.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::Context;

/// An Event as the sweep holds it: metadata (less managedFields) and the times it was
/// written or observed, under either API version's names.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent<V> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub last_timestamp: Option<String>,
    pub event_time: Option<String>,
    pub series: Option<Series>,
    pub deprecated_last_timestamp: Option<String>,
    #[serde(skip)]
    version: PhantomData<V>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub last_observed_time: Option<String>,
}

/// core/v1 Events.
#[derive(Clone, Debug, Default)]
pub struct CoreV1;
/// events.k8s.io/v1 Events (stored apart from core/v1's, so each is swept).
#[derive(Clone, Debug, Default)]
pub struct EventsV1;

macro_rules! held_event_resource {
    ($marker:ty, $k8s:ty) => {
        impl k8s_openapi::Resource for HeldEvent<$marker> {
            const API_VERSION: &'static str = <$k8s as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$k8s as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$k8s as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$k8s as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$k8s as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for HeldEvent<$marker> {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

held_event_resource!(CoreV1, k8s_openapi::api::core::v1::Event);
held_event_resource!(EventsV1, k8s_openapi::api::events::v1::Event);

impl<V> HeldEvent<V> {
    /// The newest time the event was written or observed.
    fn last_seen(&self) -> Option<DateTime<Utc>> {
        [
            self.last_timestamp.as_deref(),
            self.event_time.as_deref(),
            self.series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_deref()),
            self.deprecated_last_timestamp.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .chain(
            self.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0)),
        )
        .max()
        // Timestamps have whole seconds: count from the end of the second, never early.
        .map(|t| t + chrono::Duration::seconds(1))
    }

    /// Whether the event has gone `ttl` unwritten at `now` (one with no time at all has:
    /// upstream's lease would have run out too).
    fn expired(&self, ttl: Duration, now: DateTime<Utc>) -> bool {
        let Some(seen) = self.last_seen() else {
            return true;
        };
        match chrono::Duration::from_std(ttl) {
            Ok(ttl) => seen + ttl <= now,
            Err(_) => false,
        }
    }
}

/// How often the store is swept for `ttl`.
fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Run the loop until aborted: core/v1 and events.k8s.io/v1 Events each swept.
pub async fn run(ctx: Arc<Context>) {
    let ttl = ctx.opts.event_ttl;
    futures::future::join(
        run_kind::<CoreV1>(ctx.client.clone(), ttl),
        run_kind::<EventsV1>(ctx.client.clone(), ttl),
    )
    .await;
}

async fn run_kind<V>(client: kube::Client, ttl: Duration)
where
    V: Clone + std::fmt::Debug + Default + Send + Sync + 'static,
    HeldEvent<V>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource,
{
    let (store, writer) = reflector::store();
    let events = watcher(
        Api::<HeldEvent<V>>::all(client.clone()),
        watcher::Config::default(),
    )
    .map_ok(|ev| ev.modify(|o| o.meta_mut().managed_fields = None));
    let feed = reflector::reflector(writer, events)
        .default_backoff()
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "event TTL watch error");
            }
        });
    futures::future::join(feed, sweep_forever(client, store, ttl)).await;
}

async fn sweep_forever<V>(client: kube::Client, store: Store<HeldEvent<V>>, ttl: Duration)
where
    V: Clone + std::fmt::Debug + Default + Send + Sync + 'static,
    HeldEvent<V>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource,
{
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(sweep_period(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Utc::now();
        for ev in store.state() {
            if ev.expired(ttl, now) {
                delete(&client, &ev).await;
            }
        }
    }
}

/// Delete the version looked at only: a newer write restarts its TTL. A failure is retried
/// by the next sweep.
async fn delete<V>(client: &kube::Client, ev: &HeldEvent<V>)
where
    V: Clone + std::fmt::Debug + Default + Send + Sync + 'static,
    HeldEvent<V>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource,
{
    let key = crate::pods::key(&ev.metadata);
    let api: Api<HeldEvent<V>> =
        Api::namespaced(client.clone(), &ev.namespace().unwrap_or_default());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: ev.metadata.resource_version.clone(),
            uid: ev.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&ev.name_any(), &dp).await {
        Ok(_) => tracing::debug!(verb = "delete", resource = "events", event = %key, "expired"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(event = %key, error = %e, "event expiry failed; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_timestamp_starts_the_ttl() {
        let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
        let ev: HeldEvent<CoreV1> = serde_json::from_value(json!({
            "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2020-01-01T00:00:00Z",
            "series": {"lastObservedTime": "2026-01-01T00:00:30.000000Z"},
            "message": "not held", "involvedObject": {"kind": "Pod", "name": "p"},
        }))
        .unwrap();
        // Seen at 00:00:30 (+1 s, whole seconds): with a 30 s TTL it lives until 00:01:01.
        assert!(!ev.expired(Duration::from_secs(30), now));
        assert!(ev.expired(Duration::from_secs(29), now));
        assert!(ev.expired(Duration::from_secs(10), now));
        // Only creation to go by.
        let created: HeldEvent<EventsV1> = serde_json::from_value(json!({
            "metadata": {"name": "e", "creationTimestamp": "2026-01-01T00:00:50Z"}}))
        .unwrap();
        assert!(!created.expired(Duration::from_secs(10), now));
        assert!(created.expired(Duration::from_secs(9), now));
        // Nothing to go by: expired (upstream's lease would have run out too).
        assert!(HeldEvent::<CoreV1>::default().expired(Duration::from_secs(10), now));
    }

    #[test]
    fn sweeps_are_a_tenth_of_the_ttl_within_bounds() {
        assert_eq!(
            sweep_period(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(sweep_period(Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn addresses_each_kind_where_it_is_served() {
        assert_eq!(
            HeldEvent::<CoreV1>::url_path(&(), Some("d")),
            "/api/v1/namespaces/d/events"
        );
        assert_eq!(
            HeldEvent::<EventsV1>::url_path(&(), Some("d")),
            "/apis/events.k8s.io/v1/namespaces/d/events"
        );
    }
}
