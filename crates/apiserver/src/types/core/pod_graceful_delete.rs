//! Graceful deletion of Pods, as upstream's pod strategy and `rest.BeforeDelete`: a pod on a
//! node is marked (`deletionTimestamp` = now + grace) and its kubelet removes it later.

use serde_json::{json, Value};

use crate::object::set_meta;
pub use crate::types::strategy::GracefulDelete as Decision;

/// Upstream's `podStrategy.CheckGracefulDelete` and `rest.BeforeDelete` for one pod and the
/// request's `gracePeriodSeconds` (None: the pod's `terminationGracePeriodSeconds`).
pub fn decide(pod: &Value, requested: Option<i64>, now: chrono::DateTime<chrono::Utc>) -> Decision {
    let meta = &pod["metadata"];
    if let Some(marked_at) = meta.get("deletionTimestamp").and_then(Value::as_str) {
        // Already being deleted: only a shorter grace period may be given.
        let current = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if current == 0 {
            return Decision::Proceed;
        }
        let Some(period) = requested else {
            return Decision::Pending;
        };
        if period >= current {
            return Decision::Pending;
        }
        if period == 0 {
            return Decision::Proceed;
        }
        // The new deadline moves back by the difference, as upstream computes it.
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(marked_at) else {
            return Decision::Proceed;
        };
        let at = at.with_timezone(&chrono::Utc) - chrono::Duration::seconds(current - period);
        return Decision::Mark(Box::new(marked(pod, at, period)));
    }
    let mut period = requested.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    });
    // Nothing runs an unbound pod, and a finished one has nothing left to stop.
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if !bound || matches!(phase, Some("Succeeded") | Some("Failed")) {
        period = 0;
    }
    if period <= 0 {
        return Decision::Proceed;
    }
    Decision::Mark(Box::new(marked(
        pod,
        now + chrono::Duration::seconds(period),
        period,
    )))
}

fn marked(pod: &Value, at: chrono::DateTime<chrono::Utc>, period: i64) -> Value {
    let mut out = pod.clone();
    set_meta(
        &mut out,
        "deletionTimestamp",
        json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    set_meta(&mut out, "deletionGracePeriodSeconds", json!(period));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn pod(node: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30}, "status": {"phase": phase}})
    }

    #[test]
    fn a_running_pod_on_a_node_is_marked_with_its_grace_period() {
        let Decision::Mark(m) = decide(&pod("n1", "Running"), None, now()) else {
            panic!("not marked")
        };
        assert_eq!(m["metadata"]["deletionTimestamp"], "2025-01-01T00:00:30Z");
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 30);
        let Decision::Mark(m) = decide(&pod("n1", "Running"), Some(5), now()) else {
            panic!("not marked")
        };
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 5);
    }

    #[test]
    fn unbound_finished_or_zero_grace_pods_go_at_once() {
        assert_eq!(decide(&pod("", "Pending"), None, now()), Decision::Proceed);
        assert_eq!(
            decide(&pod("n1", "Succeeded"), None, now()),
            Decision::Proceed
        );
        assert_eq!(decide(&pod("n1", "Failed"), None, now()), Decision::Proceed);
        assert_eq!(
            decide(&pod("n1", "Running"), Some(0), now()),
            Decision::Proceed
        );
    }

    #[test]
    fn a_marked_pod_only_shortens_its_grace() {
        let Decision::Mark(m) = decide(&pod("n1", "Running"), None, now()) else {
            panic!("not marked")
        };
        assert_eq!(decide(&m, None, now()), Decision::Pending);
        assert_eq!(decide(&m, Some(60), now()), Decision::Pending);
        assert_eq!(decide(&m, Some(0), now()), Decision::Proceed);
        let Decision::Mark(short) = decide(&m, Some(10), now()) else {
            panic!("not shortened")
        };
        assert_eq!(
            short["metadata"]["deletionTimestamp"],
            "2025-01-01T00:00:10Z"
        );
        assert_eq!(short["metadata"]["deletionGracePeriodSeconds"], 10);
    }
}
