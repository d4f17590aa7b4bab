//! Event expiry (upstream's `--event-ttl`, 1 hour): an Event not written for the TTL is
//! deleted. A sweep over a store of every Event's name and times, not a reconcile per Event.
//!
//! Upstream puts each Event under an etcd lease, and the API server shares one lease among the
//! Events written within a minute (`--lease-reuse-duration-seconds`), so expiry is already that
//! coarse there. A sweep every `ttl / 10` (1 s to 30 s) matches it, holds only names and times
//! (one pod makes several Events: 30,000 pods were ~65 MB of held Events and their per-Event
//! requeue timers, then 35 MB of held metadata; now name, uid, version and time, ~6 MB),
//! and does no work per Event written beyond reading its times.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Resource;
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

    #[cfg(test)]
    fn expired(&self, ttl: Duration, now: DateTime<Utc>) -> bool {
        expired(self.last_seen(), ttl, now)
    }
}

/// Whether an event last seen at `seen` has gone `ttl` unwritten at `now` (one with no time
/// at all has: upstream's lease would have run out too).
fn expired(seen: Option<DateTime<Utc>>, ttl: Duration, now: DateTime<Utc>) -> bool {
    let Some(seen) = seen else {
        return true;
    };
    match chrono::Duration::from_std(ttl) {
        Ok(ttl) => seen + ttl <= now,
        Err(_) => false,
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
    let held = Arc::new(Mutex::new(Held::default()));
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let feed = {
        let held = held.clone();
        capstan_slim::watch(
            capstan_slim::WatchApi::<HeldEvent<V>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .for_each(move |r| {
            match r {
                Ok(ev) => {
                    let done = held.lock().unwrap_or_else(|p| p.into_inner()).apply(ev);
                    if done {
                        ready_tx.send_replace(true);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "event TTL watch error"),
            }
            futures::future::ready(())
        })
    };
    futures::future::join(feed, sweep_forever::<V>(client, held, ready, ttl)).await;
}

/// Which Event a held entry is, for its DELETE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventName {
    namespace: Box<str>,
    name: Box<str>,
}

/// What the sweep keeps of an Event: ~200 B with its key, where the Event's metadata was
/// ~1.1 KB (30,000 pods' Scheduled Events held 35 MB as metadata).
#[derive(Debug, Clone)]
struct Expiry {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    last_seen: Option<DateTime<Utc>>,
}

/// Every Event's expiry, fed by the watch; `relist` collects a relist's Events before they
/// replace `events` (Events deleted while the watch was down are not in it).
#[derive(Default)]
struct Held {
    events: HashMap<EventName, Expiry>,
    relist: Option<HashMap<EventName, Expiry>>,
}

impl Held {
    /// Take one watch event; true once a (re)list is complete.
    fn apply<V>(&mut self, ev: watcher::Event<HeldEvent<V>>) -> bool {
        let entry = |e: &HeldEvent<V>| {
            (
                EventName {
                    namespace: e.metadata.namespace.as_deref().unwrap_or("").into(),
                    name: e.metadata.name.as_deref().unwrap_or("").into(),
                },
                Expiry {
                    uid: e.metadata.uid.as_deref().map(Into::into),
                    resource_version: e.metadata.resource_version.as_deref().map(Into::into),
                    last_seen: e.last_seen(),
                },
            )
        };
        match ev {
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(e) => {
                let (k, v) = entry(&e);
                self.relist.get_or_insert_with(HashMap::new).insert(k, v);
            }
            watcher::Event::InitDone => {
                if let Some(all) = self.relist.take() {
                    self.events = all;
                }
                return true;
            }
            watcher::Event::Apply(e) => {
                let (k, v) = entry(&e);
                self.events.insert(k, v);
            }
            watcher::Event::Delete(e) => {
                let (k, _) = entry(&e);
                self.events.remove(&k);
            }
        }
        false
    }

    /// The Events gone `ttl` unwritten at `now`.
    fn expired(&self, ttl: Duration, now: DateTime<Utc>) -> Vec<(EventName, Expiry)> {
        self.events
            .iter()
            .filter(|(_, x)| expired(x.last_seen, ttl, now))
            .map(|(k, x)| (k.clone(), x.clone()))
            .collect()
    }
}

async fn sweep_forever<V>(
    client: kube::Client,
    held: Arc<Mutex<Held>>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    ttl: Duration,
) where
    V: Clone + std::fmt::Debug + Default + Send + Sync + 'static,
    HeldEvent<V>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource,
{
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(sweep_period(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expired(ttl, Utc::now());
        for (name, expiry) in due {
            delete::<V>(&client, &name, &expiry).await;
        }
    }
}

/// Delete the version looked at only: a newer write restarts its TTL. A failure is retried
/// by the next sweep.
async fn delete<V>(client: &kube::Client, name: &EventName, expiry: &Expiry)
where
    V: Clone + std::fmt::Debug + Default + Send + Sync + 'static,
    HeldEvent<V>: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource,
{
    let key = format!("{}/{}", name.namespace, name.name);
    let api: Api<HeldEvent<V>> = Api::namespaced(client.clone(), &name.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: expiry.resource_version.as_deref().map(String::from),
            uid: expiry.uid.as_deref().map(String::from),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name.name, &dp).await {
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
    fn the_held_expiries_follow_the_watch_and_a_relist_replaces_them() {
        let ev = |name: &str, seen: &str| -> HeldEvent<CoreV1> {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d", "uid": format!("u-{name}"),
                    "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "lastTimestamp": seen,
            }))
            .unwrap()
        };
        let now: DateTime<Utc> = "2026-01-01T00:10:00Z".parse().unwrap();
        let ttl = Duration::from_secs(60);
        let mut held = Held::default();
        assert!(!held.apply::<CoreV1>(watcher::Event::Init));
        held.apply(watcher::Event::InitApply(ev("old", "2026-01-01T00:00:00Z")));
        held.apply(watcher::Event::InitApply(ev(
            "gone",
            "2026-01-01T00:00:00Z",
        )));
        assert!(held.apply::<CoreV1>(watcher::Event::InitDone));
        held.apply(watcher::Event::Apply(ev("new", "2026-01-01T00:09:30Z")));
        let names = |held: &Held| {
            let mut v: Vec<String> = held
                .expired(ttl, now)
                .into_iter()
                .map(|(n, x)| {
                    format!(
                        "{}/{} {} {}",
                        n.namespace,
                        n.name,
                        x.uid.as_deref().unwrap_or_default(),
                        x.resource_version.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&held), ["d/gone u-gone 7", "d/old u-old 7"]);
        held.apply(watcher::Event::Delete(ev("gone", "2026-01-01T00:00:00Z")));
        assert_eq!(names(&held), ["d/old u-old 7"]);
        // A relist that no longer has "old": it is no longer held once the relist is done.
        held.apply::<CoreV1>(watcher::Event::Init);
        held.apply(watcher::Event::InitApply(ev("new", "2026-01-01T00:09:30Z")));
        assert_eq!(
            names(&held),
            ["d/old u-old 7"],
            "held until the relist is done"
        );
        held.apply::<CoreV1>(watcher::Event::InitDone);
        assert!(names(&held).is_empty());
        assert_eq!(held.events.len(), 1);
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
