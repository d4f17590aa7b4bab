//! NodeAffinity: `nodeSelector` and required node affinity filter; the weights of matching
//! preferred terms score.

use k8s_openapi::api::core::v1::{Node, PodSpec};

use super::{Code, Plugin, Rejection};
use crate::selectors::{labels_of, terms_match};

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// upstream `nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)`.
pub fn matches_required(spec: &PodSpec, node: &Node) -> bool {
    let labels = labels_of(&node.metadata);
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    match required(spec) {
        Some(req) => terms_match(&req.node_selector_terms, node),
        None => true,
    }
}

/// The pod's required node affinity, if it has one.
pub fn required(spec: &PodSpec) -> Option<&k8s_openapi::api::core::v1::NodeSelector> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
}

pub fn filter(spec: &PodSpec, node: &Node) -> Result<(), Rejection> {
    if matches_required(spec, node) {
        Ok(())
    } else {
        Err(Rejection::new(
            Plugin::NodeAffinity,
            Code::Unresolvable,
            REASON,
        ))
    }
}

/// Sum of the weights of the preferred terms the node matches (normalised by the maximum).
pub fn score(spec: &PodSpec, node: &Node) -> i64 {
    let Some(prefs) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return 0;
    };
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = labels_of(&node.metadata);
    prefs
        .iter()
        .filter(|p| p.weight != 0 && crate::selectors::term_matches(&p.preference, name, labels))
        .map(|p| p.weight as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }
    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    #[test]
    fn selector_and_required_terms_both_apply() {
        let s = spec(json!({"containers": [], "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}));
        assert!(filter(&s, &node("n", json!({"disk": "ssd", "zone": "a"}))).is_ok());
        let e = filter(&s, &node("n", json!({"disk": "ssd", "zone": "b"}))).unwrap_err();
        assert_eq!(e.reason_list(), vec![REASON]);
        assert!(filter(&s, &node("n", json!({"zone": "a"}))).is_err());
    }

    #[test]
    fn preferred_weights_add_up() {
        let s = spec(
            json!({"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}),
        );
        assert_eq!(score(&s, &node("n", json!({"zone": "a", "disk": "x"}))), 15);
        assert_eq!(score(&s, &node("n", json!({"disk": "x"}))), 5);
        assert_eq!(score(&s, &node("n", json!({}))), 0);
    }
}
