//! Matching labels and nodes: `LabelSelector` (pods), `NodeSelectorTerm`s (node affinity,
//! with Gt/Lt and `matchFields` on metadata.name) and a pod's `nodeSelector` map.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

static EMPTY: Labels = Labels::new();

pub fn labels_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &Labels {
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// upstream `metav1.LabelSelectorAsSelector`: an empty selector matches everything; an
/// unknown operator matches nothing (the API server should have refused it).
pub fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A `nil` selector matches nothing (as upstream for affinity terms and spread constraints).
pub fn opt_selector_matches(sel: Option<&LabelSelector>, labels: &Labels) -> bool {
    sel.is_some_and(|s| selector_matches(s, labels))
}

fn requirement_matches(r: &NodeSelectorRequirement, have: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
        "NotIn" => have.is_none_or(|h| !values.iter().any(|v| v == h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        // Gt/Lt compare integers; a non-integer on either side never matches.
        "Gt" | "Lt" => {
            let (Some(h), [v]) = (have.and_then(|h| h.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(v) = v.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                h > v
            } else {
                h < v
            }
        }
        _ => false,
    }
}

/// One term: all its expressions and fields must match; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// Terms are ORed.
pub fn terms_match(terms: &[NodeSelectorTerm], node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = labels_of(&node.metadata);
    terms.iter().any(|t| term_matches(t, name, labels))
}

/// The labels `sel` requires, when it requires nothing else (no expressions).
pub fn labels_only(sel: &LabelSelector) -> Option<&BTreeMap<String, String>> {
    if sel
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    sel.match_labels.as_ref()
}

/// The one label `sel` requires, when that is all it requires (most selectors): counts of
/// such a selector come from label indexes instead of a scan.
pub fn single_label(sel: &LabelSelector) -> Option<(&str, &str)> {
    let labels = labels_only(sel)?;
    if labels.len() != 1 {
        return None;
    }
    labels.iter().next().map(|(k, v)| (k.as_str(), v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn terms(v: serde_json::Value) -> Vec<NodeSelectorTerm> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_node_operator() {
        let n = node("n1", json!({"zone": "a", "cores": "8"}));
        let t = |e: serde_json::Value| terms(json!([{"matchExpressions": [e]}]));
        assert!(terms_match(
            &t(json!({"key": "zone", "operator": "In", "values": ["a", "b"]})),
            &n
        ));
        assert!(!terms_match(
            &t(json!({"key": "zone", "operator": "NotIn", "values": ["a"]})),
            &n
        ));
        assert!(terms_match(
            &t(json!({"key": "gpu", "operator": "NotIn", "values": ["x"]})),
            &n
        ));
        assert!(terms_match(
            &t(json!({"key": "zone", "operator": "Exists"})),
            &n
        ));
        assert!(terms_match(
            &t(json!({"key": "gpu", "operator": "DoesNotExist"})),
            &n
        ));
        assert!(terms_match(
            &t(json!({"key": "cores", "operator": "Gt", "values": ["4"]})),
            &n
        ));
        assert!(!terms_match(
            &t(json!({"key": "cores", "operator": "Lt", "values": ["4"]})),
            &n
        ));
        assert!(!terms_match(
            &t(json!({"key": "zone", "operator": "Gt", "values": ["4"]})),
            &n
        ));
        let f = terms(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
        );
        assert!(terms_match(&f, &n));
        let f = terms(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]),
        );
        assert!(!terms_match(&f, &n));
        // Terms are ORed; an empty term matches nothing.
        assert!(!terms_match(&terms(json!([{}])), &n));
        assert!(terms_match(
            &terms(json!([{}, {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}])),
            &n
        ));
    }

    #[test]
    fn label_selector_forms() {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        let s = |v| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(selector_matches(&s(json!({})), &labels));
        assert!(selector_matches(
            &s(json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!selector_matches(
            &s(json!({"matchLabels": {"app": "db"}})),
            &labels
        ));
        assert!(selector_matches(
            &s(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            &labels
        ));
        assert!(!opt_selector_matches(None, &labels));
    }
}
