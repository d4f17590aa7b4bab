//! Event expiry: events are deleted once they have not been updated for the TTL (upstream's
//! --event-ttl, 1 hour by default), so a busy cluster's event log does not grow forever.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::rest::list::{read_page, Selectors};
use crate::rest::{self, DeleteOptions};
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

/// The newest time the event was written or observed.
fn last_seen(obj: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| obj.pointer(p).and_then(Value::as_str))
    .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    .map(|t| t.with_timezone(&chrono::Utc))
    .max()
    // Timestamps have whole seconds: count from the end of the second, never early.
    .map(|t| t + chrono::Duration::seconds(1))
}

/// One pass: delete every event older than `ttl`. Returns how many went.
pub async fn sweep(state: &AppState, ttl: Duration) -> Result<usize, ApiError> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let now = chrono::Utc::now();
    let mut deleted = 0;
    for rt in state.registry.all().iter().filter(|t| t.kind == "Event") {
        let all = Target {
            rt: rt.clone(),
            namespace: None,
            name: None,
            subresource: None,
            manager: None,
        };
        let prefix = rt.key_prefix();
        let everything = Selectors::everything();
        let page = read_page(
            state,
            rt,
            &prefix,
            &everything,
            None,
            prefix.as_bytes().to_vec(),
            None,
        )
        .await?;
        for ev in page.items {
            if last_seen(&ev).is_some_and(|t| now - t < ttl) {
                continue;
            }
            let name = crate::object::name(&ev).to_string();
            let ns = crate::object::namespace(&ev).to_string();
            let target = Target {
                namespace: Some(ns),
                name: Some(name.clone()),
                ..all.clone()
            };
            // Only the version we looked at: a newer write restarts its TTL.
            let opts = DeleteOptions {
                dry_run: false,
                uid: None,
                resource_version: crate::object::meta_str(&ev, "resourceVersion").map(String::from),
                grace_period_seconds: None,
                ..DeleteOptions::default()
            };
            match rest::delete_object(state, &target, &name, &opts).await {
                Ok(_) => deleted += 1,
                Err(e) if e.code == StatusCode::NOT_FOUND || e.code == StatusCode::CONFLICT => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

pub fn spawn(state: AppState, ttl: Duration) -> tokio::task::JoinHandle<()> {
    // Check often enough that an event outlives its TTL by at most ~10%.
    let every = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match sweep(&state, ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired events removed"),
                Err(e) => tracing::warn!(error = %e.message, "event expiry pass failed"),
            }
        }
    })
}
