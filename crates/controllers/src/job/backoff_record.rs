//! The pod-failure back-off of a Job (upstream's backoffRecord): failures since the last
//! success and when the last one happened give the delay before the next pod is made —
//! base × 2^(failures−1), capped.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::cached_pod::Pod;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub failures_after_last_success: u32,
    pub last_failure: Option<Timestamp>,
}

/// When a pod finished: its containers' latest finish, else when its Ready condition went
/// False, else its deletion, else its creation.
pub fn finished_at(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(t) = containers {
        return t;
    }
    let ready_false = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    ready_false
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now)
}

impl Record {
    /// The record after newly finished pods (upstream's newBackoffRecord): a success resets
    /// the count, failures after the latest success add to it.
    pub fn with(&self, succeeded: &[&Pod], failed: &[&Pod]) -> Record {
        let mut failed_at: Vec<Timestamp> = failed.iter().map(|p| finished_at(p)).collect();
        failed_at.sort();
        let last_success = succeeded.iter().map(|p| finished_at(p)).max();
        match last_success {
            None => {
                let Some(last) = failed_at.last().copied() else {
                    return self.clone();
                };
                Record {
                    failures_after_last_success: self
                        .failures_after_last_success
                        .saturating_add(failed_at.len() as u32),
                    last_failure: Some(last),
                }
            }
            Some(success) => {
                let after: Vec<Timestamp> =
                    failed_at.into_iter().filter(|t| *t > success).collect();
                Record {
                    failures_after_last_success: after.len() as u32,
                    last_failure: after.last().copied(),
                }
            }
        }
    }

    /// The delay after `failures`: base, 2×base, 4×base … up to `cap`.
    pub fn delay(failures: u32, base: Duration, cap: Duration) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(31);
        base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
    }

    /// How long until the next pod may be made at `now`.
    pub fn remaining(&self, now: Timestamp, base: Duration, cap: Duration) -> Duration {
        let Some(last) = self.last_failure else {
            return Duration::ZERO;
        };
        let wait = Record::delay(self.failures_after_last_success, base, cap);
        let elapsed = now.duration_since(last);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        wait.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, at: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": phase,
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false,
              "restartCount": 0, "state": {"terminated": {"exitCode": 1, "finishedAt": at}}}]}}))
        .unwrap()
    }

    #[test]
    fn failures_double_the_delay_and_success_resets() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(360);
        let f1 = pod("Failed", "2026-01-01T00:00:00Z");
        let f2 = pod("Failed", "2026-01-01T00:00:30Z");
        let r = Record::default().with(&[], &[&f1, &f2]);
        assert_eq!(r.failures_after_last_success, 2);
        let now: Timestamp = "2026-01-01T00:00:35Z".parse().unwrap();
        assert_eq!(r.remaining(now, base, cap), Duration::from_secs(15));
        let s = pod("Succeeded", "2026-01-01T00:00:20Z");
        let r2 = Record::default().with(&[&s], &[&f1, &f2]);
        assert_eq!(r2.failures_after_last_success, 1);
        assert_eq!(Record::delay(10, base, cap), cap);
    }
}
