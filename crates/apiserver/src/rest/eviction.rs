//! The `pods/eviction` subresource (upstream's pkg/registry/core/pod/storage/eviction.go): a
//! policy/v1 Eviction deletes the pod unless that would break its PodDisruptionBudget.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::admission::{Attributes, Operation};
use crate::object;
use crate::rest::{self, json_response};
use crate::status::ApiError;
use crate::storage::decode_for;
use crate::types::Target;
use crate::AppState;

/// Attempts at the read-check-write before a concurrent writer wins for good.
const ATTEMPTS: usize = 16;
/// Evictions the disruption controller has not confirmed yet, at most (upstream's
/// MaxDisruptedPodSize).
const MAX_DISRUPTED_PODS: usize = 2000;
const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// A 429 with the DisruptionBudget cause, as upstream words it.
fn too_many(cause: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", VIOLATES)
        .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Pods whose eviction no budget guards: finished, not yet running, or already going
/// (upstream's canIgnorePDB).
fn can_ignore_budget(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether a policy/v1 selector matches `labels` (an empty selector matches every pod, a
/// missing one none).
fn selects(selector: Option<&Value>, labels: &serde_json::Map<String, Value>) -> bool {
    selector
        .filter(|s| s.is_object())
        .is_some_and(|s| crate::types::selector::label_selector_matches(s, labels))
}

/// The namespace's budgets whose selector matches the pod, with their revisions.
async fn budgets_of(
    state: &AppState,
    pdb_rt: &crate::types::registry::ResourceType,
    ns: &str,
    pod: &Value,
) -> Result<Vec<(Value, i64)>, ApiError> {
    use capstan_store::{KeyRange, RangeRequest};
    let prefix = format!("{}{ns}/", pdb_rt.key_prefix());
    let all = state
        .store
        .range(RangeRequest::new(KeyRange::prefix(bytes::Bytes::from(
            prefix,
        ))))
        .await?;
    let empty = serde_json::Map::new();
    let labels = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Vec::new();
    for kv in &all.kvs {
        let pdb = decode_for(pdb_rt, kv)?;
        if selects(pdb.pointer("/spec/selector"), labels) {
            out.push((pdb, kv.mod_revision));
        }
    }
    Ok(out)
}

/// `POST .../pods/{name}/eviction`.
pub async fn create(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let pod_name = t.name.as_deref().unwrap_or("").to_string();
    let ns = t.namespace.clone().unwrap_or_default();
    let eviction = rest::decode_body(content_type, body)?;
    if let Some(n) = object::meta_str(&eviction, "namespace").filter(|n| !n.is_empty()) {
        if n != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    if object::meta_str(&eviction, "name").unwrap_or("") != pod_name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    // A node may evict only its own pods (NodeRestriction; evictions skip the write chain).
    let (pod, _) = rest::read_existing(state, t, &pod_name).await?;
    crate::admission::node_restriction::admit_eviction(state, t, &pod)?;
    let delete_body = match eviction.get("deleteOptions") {
        Some(d) if d.is_object() => serde_json::to_vec(d).unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut opts = rest::delete_options(query, &delete_body)?;
    let Some(pdb_rt) = state.registry.find("policy", "v1", "poddisruptionbudgets") else {
        return Err(ApiError::internal("PodDisruptionBudgets are not served"));
    };
    let user_rv = opts.resource_version.clone();
    for _ in 0..ATTEMPTS {
        let (pod, pod_rev) = rest::read_existing(state, t, &pod_name).await?;
        if can_ignore_budget(&pod) {
            return delete_pod(state, t, &pod_name, &opts).await;
        }
        let budgets = budgets_of(state, &pdb_rt, &ns, &pod).await?;
        if budgets.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some((mut pdb, pdb_rev)) = budgets.into_iter().next() else {
            return delete_pod(state, t, &pod_name, &opts).await;
        };
        let pdb_name = object::name(&pdb).to_string();
        // An unready pod may go without spending the budget when the policy allows it.
        if !pod_ready(&pod) {
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("IfHealthyBudget");
            let healthy = i(&pdb, "/status/currentHealthy");
            let desired = i(&pdb, "/status/desiredHealthy");
            if policy == "AlwaysAllow" || (healthy >= desired && desired > 0) {
                opts.resource_version = user_rv.clone().or(Some(pod_rev.to_string()));
                match delete_pod(state, t, &pod_name, &opts).await {
                    Err(e) if e.code == StatusCode::CONFLICT && user_rv.is_none() => continue,
                    r => return r,
                }
            }
        }
        if i(&pdb, "/status/observedGeneration") < i(&pdb, "/metadata/generation") {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let allowed = i(&pdb, "/status/disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                i(&pdb, "/status/desiredHealthy"),
                i(&pdb, "/status/currentHealthy")
            )));
        }
        // Spend one disruption and note the pod, so the controller does not count it
        // healthy again before its deletion shows.
        if !opts.dry_run {
            let old = pdb.clone();
            let status = &mut pdb["status"];
            status["disruptionsAllowed"] = json!(allowed - 1);
            if !status.get("disruptedPods").is_some_and(Value::is_object) {
                status["disruptedPods"] = json!({});
            }
            status["disruptedPods"][&pod_name] = json!(object::now_rfc3339());
            if allowed - 1 == 0 {
                set_insufficient(status);
            }
            let pdb_target = Target {
                rt: pdb_rt.clone(),
                namespace: Some(ns.clone()),
                name: Some(pdb_name.clone()),
                subresource: Some("status".into()),
                manager: None,
            };
            match rest::update_object(state, &pdb_target, old, pdb_rev, pdb, pdb_rev, false).await {
                Ok(_) => {}
                Err(e) if e.code == StatusCode::CONFLICT => continue,
                Err(e) => return Err(e),
            }
        }
        return delete_pod(state, t, &pod_name, &opts).await;
    }
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "the pod or its disruption budget kept changing; try again",
    ))
}

/// The DisruptionAllowed condition once no disruption is left (upstream's
/// UpdateDisruptionAllowedCondition).
fn set_insufficient(status: &mut Value) {
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    let now = object::now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != "False" {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("False");
            c["reason"] = json!("InsufficientPods");
        }
        None => conds.push(json!({"type": "DisruptionAllowed", "status": "False",
            "reason": "InsufficientPods", "message": "", "lastTransitionTime": now})),
    }
}

/// Delete the pod with the Eviction's options; the answer is upstream's 201 Success.
async fn delete_pod(
    state: &AppState,
    t: &Target,
    name: &str,
    opts: &rest::DeleteOptions,
) -> Result<Response, ApiError> {
    // The delete itself addresses the pod, not its eviction subresource.
    let pod_target = Target {
        subresource: None,
        ..t.clone()
    };
    let t = &pod_target;
    let attrs = Attributes {
        state,
        operation: Operation::Delete,
        target: t,
        name,
        dry_run: opts.dry_run,
    };
    state.admission.validate(&attrs, &Value::Null, None).await?;
    rest::delete_object(state, t, name, opts).await?;
    let mut ok = crate::status::success();
    ok["code"] = json!(201);
    Ok(json_response(StatusCode::CREATED, &ok))
}
