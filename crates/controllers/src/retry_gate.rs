//! Holding a failed object back until its retry is due: a loop that records a failure in the
//! object's status is woken at once by its own write, and must not retry before the back-off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;

use crate::admission_changes::Scope;

/// When each failed object's next attempt is due, and for which generation of its spec.
#[derive(Default)]
pub struct RetryGate {
    due: Mutex<HashMap<String, (Instant, Option<i64>)>>,
}

impl RetryGate {
    /// `key` failed at `generation`: hold it for `delay`.
    pub fn hold(&self, key: &str, generation: Option<i64>, delay: Duration) {
        let mut m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // A delay past what Instant can hold is "until released".
        let due = now
            .checked_add(delay)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        m.insert(key.to_string(), (due, generation));
    }

    /// How long `key` is still held, if it is (a new generation — the user changed the
    /// spec — is never held).
    pub fn wait(&self, key: &str, generation: Option<i64>) -> Option<Duration> {
        let m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let (due, g) = m.get(key)?;
        let now = Instant::now();
        (*g == generation && *due > now).then(|| *due - now)
    }

    /// Release every held key `scope` covers (admission may now accept what it refused),
    /// returning them so their loop can retry at once.
    pub fn release_in(&self, scope: &Scope) -> Vec<String> {
        let mut m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<String> = m.keys().filter(|k| scope.covers(k)).cloned().collect();
        for k in &keys {
            m.remove(k);
        }
        keys
    }

    /// `key` succeeded or is gone.
    pub fn release(&self, key: &str) {
        let mut m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }
}

/// The objects to retry now, from a feed of admission changes: each change releases the
/// held objects it covers (`release`, usually `RetryGate::release_in`) — a cause that does
/// not change (a bad template) keeps its back-off.
pub fn retries_on<K, F>(
    changes: impl Stream<Item = Scope> + Send + 'static,
    release: F,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + 'static,
    F: Fn(&Scope) -> Vec<String> + Send + 'static,
{
    changes.flat_map(move |scope| {
        let refs: Vec<ObjectRef<K>> = release(&scope)
            .into_iter()
            .filter_map(|key| {
                let (ns, name) = key.split_once('/')?;
                tracing::debug!(object = %key, kind = %K::kind(&()), "admission changed: retrying now");
                Some(ObjectRef::new(name).within(ns))
            })
            .collect();
        futures::stream::iter(refs)
    })
}

/// What a failure's condition says, in one wording for every loop: what failed, how many
/// attempts were made and when the next is due.
pub fn retry_message(error: &str, attempts: u32, delay: Duration) -> String {
    let secs = delay.as_secs_f64().ceil() as u64;
    let next = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs as i64))
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    format!(
        "{error} (attempt {attempts}; next attempt in {secs}s at {})",
        next.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The condition that says why pods are missing (the ReplicaSet's name for it).
pub const FAILURE: &str = "ReplicaFailure";

/// A workload's pods could not be made: count the attempt, hold the object until its retry
/// is due, and say so in its `ReplicaFailure` condition (what failed, attempts, when the next
/// is due), written through `/status` only if it changed. Returns the delay to requeue after.
/// Shared by the StatefulSet and DaemonSet loops.
pub async fn report_failure<K, C>(
    api: &kube::Api<K>,
    meta: &kube::api::ObjectMeta,
    mut conds: Vec<C>,
    backoff: &crate::backoff::Backoff,
    gate: &RetryGate,
    error: &(dyn std::fmt::Display + Sync),
) -> Result<Duration, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    C: crate::conditions::Condition + serde::Serialize,
{
    let key = crate::pods::key(meta);
    let (attempts, delay) = backoff.failed(&key);
    gate.hold(&key, meta.generation, delay);
    let msg = retry_message(&error.to_string(), attempts, delay);
    tracing::warn!(object = %key, %error, attempts, retry_in = ?delay, "could not create");
    if crate::conditions::set(&mut conds, FAILURE, "True", "FailedCreate", &msg) {
        api.patch_status(
            meta.name.as_deref().unwrap_or(""),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": conds}})),
        )
        .await?;
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_due_or_a_new_generation() {
        let g = RetryGate::default();
        assert_eq!(g.wait("a", Some(1)), None);
        g.hold("a", Some(1), Duration::from_secs(60));
        assert!(g.wait("a", Some(1)).is_some());
        assert_eq!(g.wait("a", Some(2)), None);
        g.release("a");
        assert_eq!(g.wait("a", Some(1)), None);
        g.hold("b", None, Duration::ZERO);
        assert_eq!(g.wait("b", None), None);
    }

    #[test]
    fn an_admission_change_releases_the_namespace_it_covers() {
        let g = RetryGate::default();
        g.hold("a/x", Some(1), Duration::from_secs(60));
        g.hold("b/y", Some(1), Duration::from_secs(60));
        assert_eq!(g.release_in(&Scope::Namespace("a".into())), vec!["a/x"]);
        assert_eq!(g.wait("a/x", Some(1)), None);
        assert!(g.wait("b/y", Some(1)).is_some());
        assert_eq!(g.release_in(&Scope::All), vec!["b/y"]);
    }
}
