//! Holding a failed object back until its retry is due: a loop that records a failure in the
//! object's status is woken at once by its own write, and must not retry before the back-off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each failed object's next attempt is due, and for which generation of its spec.
#[derive(Default)]
pub struct RetryGate {
    due: Mutex<HashMap<String, (Instant, Option<i64>)>>,
}

impl RetryGate {
    /// `key` failed at `generation`: hold it for `delay`.
    pub fn hold(&self, key: &str, generation: Option<i64>, delay: Duration) {
        let mut m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(key.to_string(), (Instant::now() + delay, generation));
    }

    /// How long `key` is still held, if it is (a new generation — the user changed the
    /// spec — is never held).
    pub fn wait(&self, key: &str, generation: Option<i64>) -> Option<Duration> {
        let m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let (due, g) = m.get(key)?;
        let now = Instant::now();
        (*g == generation && *due > now).then(|| *due - now)
    }

    /// `key` succeeded or is gone.
    pub fn release(&self, key: &str) {
        let mut m = self.due.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }
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
    let msg = format!(
        "{error} (attempt {attempts}; next attempt in {}s)",
        delay.as_secs_f64().ceil() as u64
    );
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
}
