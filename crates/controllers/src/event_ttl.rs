//! Event expiry (upstream's `--event-ttl`, 1 hour): an Event not written for the TTL is
//! deleted. Each Event is requeued for the moment it expires, so between expiries nothing runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{reflector, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting expired event {key}: {source}")]
    Delete { key: String, source: kube::Error },
}

struct Loop {
    ttl: Duration,
    client: kube::Client,
    backoff: Backoff,
}

/// Run the loop until aborted: core/v1 and events.k8s.io/v1 Events are stored apart, so
/// each is swept.
pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ttl: ctx.opts.event_ttl,
        client: ctx.client.clone(),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    });
    futures::future::join(
        run_kind::<k8s_openapi::api::core::v1::Event>(lp.clone(), |e| {
            e.message = None;
            e.involved_object = Default::default();
            e.related = None;
            e.source = None;
        }),
        run_kind::<k8s_openapi::api::events::v1::Event>(lp, |e| {
            e.note = None;
            e.regarding = None;
            e.related = None;
        }),
    )
    .await;
}

/// Each Event is held until it expires (one per pod scheduled, started, killed…): the
/// store keeps its name, versions and times, not what it says or its managedFields.
async fn run_kind<K>(lp: Arc<Loop>, trim: fn(&mut K))
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events =
        watcher(Api::<K>::all(lp.client.clone()), watcher::Config::default()).map_ok(move |ev| {
            ev.modify(|o| {
                o.meta_mut().managed_fields = None;
                trim(o);
            })
        });
    let changes = reflector::reflector(writer, events)
        .default_backoff()
        .applied_objects();
    Controller::for_stream(changes, store)
        .run(reconcile::<K>, error_policy::<K>, lp)
        .for_each(|_| async {})
        .await;
}

fn error_policy<K: Resource>(ev: Arc<K>, err: &Error, lp: Arc<Loop>) -> Action {
    let key = crate::pods::key(ev.meta());
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(event = %key, attempts, error = %err, "event expiry failed; retrying");
    Action::requeue(delay)
}

async fn reconcile<K>(ev: Arc<K>, lp: Arc<Loop>) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let key = crate::pods::key(ev.meta());
    let obj = serde_json::to_value(&*ev).unwrap_or(Value::Null);
    if let Some(left) = time_left(&obj, lp.ttl, Utc::now()) {
        return Ok(Action::requeue(left));
    }
    let api: Api<K> = Api::namespaced(lp.client.clone(), &ev.namespace().unwrap_or_default());
    // Only the version looked at: a newer write restarts its TTL.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: ev.meta().resource_version.clone(),
            uid: ev.meta().uid.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&ev.name_any(), &dp).await {
        Ok(_) => tracing::debug!(verb = "delete", resource = "events", event = %key, "expired"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => return Err(Error::Delete { key, source }),
    }
    lp.backoff.reset(&key);
    Ok(Action::await_change())
}

/// How long until the event expires, or None if it has.
fn time_left(obj: &Value, ttl: Duration, now: DateTime<Utc>) -> Option<Duration> {
    let expires = last_seen(obj)? + chrono::Duration::from_std(ttl).ok()?;
    (expires > now).then(|| (expires - now).to_std().unwrap_or_default())
}

/// The newest time the event was written or observed (either API version's fields).
fn last_seen(obj: &Value) -> Option<DateTime<Utc>> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| obj.pointer(p).and_then(Value::as_str))
    .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
    .map(|t| t.with_timezone(&Utc))
    .max()
    // Timestamps have whole seconds: count from the end of the second, never early.
    .map(|t| t + chrono::Duration::seconds(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_timestamp_starts_the_ttl() {
        let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
        let ev = json!({
            "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2020-01-01T00:00:00Z",
            "series": {"lastObservedTime": "2026-01-01T00:00:30.000000Z"},
        });
        assert_eq!(
            time_left(&ev, Duration::from_secs(60), now),
            Some(Duration::from_secs(31))
        );
        assert_eq!(time_left(&ev, Duration::from_secs(10), now), None);
        // Nothing to go by: expired (upstream's lease would have run out too).
        assert_eq!(time_left(&json!({}), Duration::from_secs(10), now), None);
    }
}
