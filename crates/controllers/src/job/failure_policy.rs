//! `podFailurePolicy`: which rule a failed pod matches (exit codes of its containers, its
//! conditions) and what follows — fail the Job, fail the index, ignore or count the failure.

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicy, PodFailurePolicyRule};

use crate::cached_pod::{ContainerStatus, Pod};
use crate::pods::phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// FailJob: the Job fails with this message.
    FailJob(String),
    /// FailIndex: the pod's index fails (counted).
    FailIndex,
    /// Ignore: not counted against the back-off limit.
    Ignore,
    /// Count, or no rule matched: counted as usual.
    Count,
}

impl Outcome {
    pub fn counts(&self) -> bool {
        !matches!(self, Outcome::Ignore)
    }
}

/// Upstream's onlyReplaceFailedPods: a new pod is made only once the old one is Failed.
pub fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

/// Upstream's isPodFailed: Failed, or (unless only failed pods are replaced) deleted before
/// it succeeded — an orphaned pod may never reach Failed.
pub fn is_failed(pod: &Pod, job: &Job) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

/// The first rule `pod` matches, as an outcome (Count when none matches).
pub fn evaluate(policy: &PodFailurePolicy, pod: &Pod) -> Outcome {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    for (index, rule) in policy.rules.iter().enumerate() {
        if rule.on_exit_codes.is_some() {
            if let Some(c) = matching_container(pod, rule) {
                let code = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                    .unwrap_or(0);
                return outcome(rule, || {
                    format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                        c.name, rule.action
                    )
                });
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let has = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == pattern.type_ && c.status == pattern.status)
                });
            if has {
                return outcome(rule, || {
                    format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                        pattern.type_, rule.action
                    )
                });
            }
        }
    }
    Outcome::Count
}

fn outcome(rule: &PodFailurePolicyRule, message: impl FnOnce() -> String) -> Outcome {
    match rule.action.as_str() {
        "FailJob" => Outcome::FailJob(message()),
        "FailIndex" => Outcome::FailIndex,
        "Ignore" => Outcome::Ignore,
        _ => Outcome::Count,
    }
}

/// The first terminated container (init containers first) whose non-zero exit code the
/// rule's `onExitCodes` matches.
fn matching_container<'a>(
    pod: &'a Pod,
    rule: &PodFailurePolicyRule,
) -> Option<&'a ContainerStatus> {
    let req = rule.on_exit_codes.as_ref()?;
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in all {
        let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if t.exit_code == 0 {
            continue;
        }
        if req.container_name.as_deref().is_some_and(|n| n != c.name) {
            continue;
        }
        let listed = req.values.contains(&t.exit_code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if hit {
            return Some(c);
        }
    }
    None
}

/// The message of the first failed pod whose failure fails the Job, if any.
pub fn fail_job_message<'a>(job: &Job, pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    let policy = job.spec.as_ref()?.pod_failure_policy.as_ref()?;
    pods.into_iter()
        .filter(|p| is_failed(p, job))
        .find_map(|p| match evaluate(policy, p) {
            Outcome::FailJob(m) => Some(m),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(code: i32, conds: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conds, "containerStatuses": [
                {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn rules_match_in_order() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"containerName": "main", "operator": "NotIn", "values": [1]}},
        ]}))
        .unwrap();
        assert_eq!(
            evaluate(&policy, &pod(42, json!([]))),
            Outcome::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        assert_eq!(
            evaluate(
                &policy,
                &pod(42, json!([{"type": "DisruptionTarget", "status": "True"}]))
            ),
            Outcome::Ignore
        );
        assert_eq!(evaluate(&policy, &pod(1, json!([]))), Outcome::Count);
        assert!(!Outcome::Ignore.counts());
    }
}
