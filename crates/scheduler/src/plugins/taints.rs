//! TaintToleration: NoSchedule/NoExecute taints must be tolerated (filter); untolerated
//! PreferNoSchedule taints lower a node's score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{Code, Plugin, Rejection};

/// upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything (validation requires Exists).
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule/NoExecute taint not tolerated, as upstream's message names it.
pub fn filter(taints: &[Taint], tolerations: &[Toleration]) -> Result<(), Rejection> {
    match taints.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t)
    }) {
        None => Ok(()),
        Some(t) => Err(Rejection::new(
            Plugin::TaintToleration,
            Code::Unresolvable,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// Count of PreferNoSchedule taints the pod's PreferNoSchedule (or effect-less)
/// tolerations do not cover; normalised reversed (fewer is better).
pub fn score(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    let prefer: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !prefer.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taints(v: serde_json::Value) -> Vec<Taint> {
        serde_json::from_value(v).unwrap()
    }
    fn tols(v: serde_json::Value) -> Vec<Toleration> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn untolerated_noschedule_is_named_in_upstream_shape() {
        let t = taints(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        let err = filter(&t, &[]).unwrap_err();
        assert_eq!(
            err.reason_list(),
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        assert_eq!(err.code, Code::Unresolvable);
        assert!(filter(
            &t,
            &tols(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}]))
        )
        .is_ok());
        assert!(filter(
            &t,
            &tols(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]))
        )
        .is_ok());
        assert!(filter(&t, &tols(json!([{"operator": "Exists"}]))).is_ok());
        assert!(filter(&t, &tols(json!([{"key": "dedicated", "value": "cpu"}]))).is_err());
        assert!(filter(
            &t,
            &tols(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]))
        )
        .is_err());
        // PreferNoSchedule never filters.
        let soft = taints(json!([{"key": "k", "effect": "PreferNoSchedule"}]));
        assert!(filter(&soft, &[]).is_ok());
    }

    #[test]
    fn prefer_no_schedule_counts_untolerated() {
        let t = taints(json!([
            {"key": "a", "effect": "PreferNoSchedule"},
            {"key": "b", "effect": "PreferNoSchedule"},
            {"key": "c", "effect": "NoSchedule"}
        ]));
        assert_eq!(score(&t, &[]), 2);
        assert_eq!(
            score(&t, &tols(json!([{"key": "a", "operator": "Exists"}]))),
            1
        );
        // A NoSchedule toleration does not cover a PreferNoSchedule taint.
        assert_eq!(
            score(
                &t,
                &tols(json!([{"key": "b", "operator": "Exists", "effect": "NoSchedule"}]))
            ),
            2
        );
    }
}
