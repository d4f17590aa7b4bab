//! The `scale` subresource (autoscaling/v1 Scale) of custom resources that declare one:
//! reads and writes the replica count at the CRD's specReplicasPath, nothing else.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::object;
use crate::rest::{self, is_dry_run, json_response};
use crate::status::{ApiError, Cause};
use crate::types::crd::ScalePaths;
use crate::types::Target;
use crate::AppState;

fn paths(t: &Target) -> Result<&ScalePaths, ApiError> {
    t.rt.scale
        .as_ref()
        .ok_or_else(|| ApiError::path_not_found("scale"))
}

/// The Scale view of an object.
pub fn to_scale(p: &ScalePaths, obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let pick = |f: &str| meta.get(f).cloned().unwrap_or(Value::Null);
    let mut m = json!({"name": pick("name"), "uid": pick("uid"), "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")});
    if let Some(ns) = meta.get("namespace") {
        m["namespace"] = ns.clone();
    }
    let mut status = json!({
        "replicas": obj.pointer(&p.status_replicas).and_then(Value::as_i64).unwrap_or(0),
    });
    let selector = if p.selector_from_spec {
        obj.pointer("/spec/selector").and_then(selector_string)
    } else {
        p.label_selector
            .as_ref()
            .and_then(|s| obj.pointer(s))
            .and_then(Value::as_str)
            .map(String::from)
    };
    if let Some(sel) = selector {
        status["selector"] = json!(sel);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj.pointer(&p.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// A LabelSelector (`matchLabels` + `matchExpressions`) as the string form kubectl and HPAs
/// read: `app=web,tier in (a,b)`.
fn selector_string(sel: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    Some(parts.join(","))
}

/// Set a JSON pointer's value, creating the objects on the way.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, raw) in parts.iter().enumerate() {
        let key = raw.replace("~1", "/").replace("~0", "~");
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == parts.len() {
            cur[key.as_str()] = value;
            return;
        }
        cur = &mut cur[key.as_str()];
    }
}

pub async fn get(state: &AppState, t: &Target) -> Result<Response, ApiError> {
    let p = paths(t)?;
    let name = t.name.as_deref().unwrap_or("");
    let (obj, _) = rest::read_existing(state, t, name).await?;
    Ok(json_response(StatusCode::OK, &to_scale(p, &obj)))
}

/// Write a Scale (from PUT, or PATCH applied to the current Scale) back to the object.
async fn write(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    old: Value,
    old_rev: i64,
    scale: Value,
) -> Result<Response, ApiError> {
    let p = paths(t)?;
    let name = object::name(&old).to_string();
    let replicas = scale.pointer("/spec/replicas");
    let replicas = match replicas.and_then(Value::as_i64) {
        Some(n) if n >= 0 => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.replicas".into(),
                    message: format!("Invalid value: {n}: must be greater than or equal to 0"),
                }],
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![Cause::required("spec.replicas", "")],
            ))
        }
    };
    let expected = match object::meta_str(&scale, "resourceVersion") {
        None | Some("") => old_rev,
        Some(rv) => rv.parse::<i64>().unwrap_or(-1),
    };
    let mut new = old.clone();
    set_pointer(&mut new, &p.spec_replicas, json!(replicas));
    let out = rest::update_object(state, t, old, old_rev, new, expected, is_dry_run(query)).await?;
    Ok(json_response(StatusCode::OK, &to_scale(p, &out)))
}

pub async fn update(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let scale = rest::decode_body(content_type, body)?;
    let name = t.name.as_deref().unwrap_or("");
    let (old, old_rev) = rest::read_existing(state, t, name).await?;
    write(state, t, query, old, old_rev, scale).await
}

pub async fn patch(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = paths(t)?;
    let name = t.name.as_deref().unwrap_or("");
    let (old, old_rev) = rest::read_existing(state, t, name).await?;
    let mut scale = to_scale(p, &old);
    crate::patch::merge::apply_to(&mut scale, content_type, body, true)?;
    write(state, t, query, old, old_rev, scale).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reads_and_writes_the_declared_paths() {
        let p = ScalePaths {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            label_selector: Some("/status/selector".into()),
            selector_from_spec: false,
        };
        let obj = json!({"metadata": {"name": "a", "namespace": "n", "resourceVersion": "7"},
            "spec": {"replicas": 2}, "status": {"replicas": 1, "selector": "app=a"}});
        let s = to_scale(&p, &obj);
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"], json!({"replicas": 1, "selector": "app=a"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        let mut empty = json!({"metadata": {}});
        set_pointer(&mut empty, "/spec/replicas", json!(4));
        assert_eq!(empty["spec"]["replicas"], 4);
    }
}
