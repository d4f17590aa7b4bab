//! The `pods/binding` subresource: a scheduler's `Binding` sets a pod's `spec.nodeName`
//! once, copies the binding's annotations and marks the pod `PodScheduled=True`.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use capstan_store::{Txn, TxnResponse};
use serde_json::{json, Value};

use crate::object;
use crate::rest::{self, is_dry_run, json_response};
use crate::status::{ApiError, Cause};
use crate::types::Target;
use crate::AppState;

/// Attempts at the read-modify-write before a concurrent writer wins for good.
const ATTEMPTS: usize = 16;

/// What a Binding asks for, checked as upstream's ValidatePodBinding (which answers a
/// bad one as a 500; capstan names the field in a 422 instead).
struct Request {
    node: String,
    uid: Option<String>,
    resource_version: Option<String>,
    annotations: serde_json::Map<String, Value>,
}

fn parse(pod: &str, body: &Value) -> Result<Request, ApiError> {
    let name = object::meta_str(body, "name").unwrap_or("");
    if name != pod {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    let kind = body
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    if !kind.is_empty() && kind != "Node" {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "target.kind".into(),
            message: format!(
                "Unsupported value: {kind:?}: supported values: \"Node\", \"<empty>\""
            ),
        });
    }
    if node.is_empty() {
        causes.push(Cause::required("target.name", ""));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", name, causes));
    }
    let annotations = body
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(Request {
        node: node.to_string(),
        uid: object::meta_str(body, "uid")
            .filter(|u| !u.is_empty())
            .map(String::from),
        resource_version: object::meta_str(body, "resourceVersion")
            .filter(|v| !v.is_empty())
            .map(String::from),
        annotations,
    })
}

/// Why a pod cannot take this binding, worded as upstream's assignPod (a 409 on
/// `pods/binding`).
fn refuse(pod: &str, why: String) -> ApiError {
    ApiError::conflict("", "pods/binding", pod, &why)
}

/// The pod as bound: node, annotations and the PodScheduled condition (upstream's
/// UpdatePodCondition: the condition is replaced, its transition time kept if its
/// status did not change).
fn bind(pod: &mut Value, req: &Request) {
    pod["spec"]["nodeName"] = json!(req.node);
    if !req.annotations.is_empty() {
        let meta = &mut pod["metadata"];
        if !meta.get("annotations").is_some_and(Value::is_object) {
            meta["annotations"] = json!({});
        }
        if let Some(a) = meta["annotations"].as_object_mut() {
            for (k, v) in &req.annotations {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let mut cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": object::now_rfc3339()});
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        Some(old) => {
            if old.get("status").and_then(Value::as_str) == Some("True") {
                if let Some(t) = old.get("lastTransitionTime") {
                    cond["lastTransitionTime"] = t.clone();
                }
            }
            *old = cond;
        }
        None => conditions.push(cond),
    }
}

/// `POST .../pods/{name}/binding`.
pub async fn create(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let pod_name = t.name.as_deref().unwrap_or("");
    let binding = rest::decode_body(content_type, body)?;
    if let Some(ns) = object::meta_str(&binding, "namespace").filter(|n| !n.is_empty()) {
        if Some(ns) != t.namespace.as_deref() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let req = parse(pod_name, &binding)?;
    for _ in 0..ATTEMPTS {
        let (mut pod, rev) = rest::read_existing(state, t, pod_name).await?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(refuse(
                pod_name,
                format!("pod {pod_name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let uid = object::meta_str(&pod, "uid").unwrap_or("");
        if let Some(want) = req.uid.as_deref().filter(|w| *w != uid) {
            return Err(refuse(
                pod_name,
                format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(want) = req.resource_version.as_deref() {
            if want != rev.to_string() {
                return Err(refuse(
                    pod_name,
                    "the object has been modified; please apply your changes to the latest version and try again".into(),
                ));
            }
        }
        let current = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(refuse(
                pod_name,
                format!("pod {pod_name} is already assigned to node {current:?}"),
            ));
        }
        if pod
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty())
        {
            return Err(refuse(
                pod_name,
                format!("pod {pod_name} has non-empty .spec.schedulingGates"),
            ));
        }
        bind(&mut pod, &req);
        if is_dry_run(query) {
            return Ok(created());
        }
        if let Some(m) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let k = rest::key(&t.rt, t.namespace.as_deref(), pod_name);
        let txn = Txn::new()
            .when(Bytes::from(k.clone()), rev)
            .put(Bytes::from(k), rest::encode_as_stored(&t.rt, &pod)?);
        match state.store.txn(txn).await? {
            TxnResponse::Succeeded { .. } => {
                tracing::debug!(verb = "create", resource = "pods/binding", namespace = t.namespace.as_deref().unwrap_or(""), name = pod_name, node = %req.node, "bound");
                return Ok(created());
            }
            // Another writer changed the pod (a status update, a label): read it again.
            TxnResponse::Failed { .. } => continue,
        }
    }
    Err(refuse(
        pod_name,
        "the object has been modified; please apply your changes to the latest version and try again".into(),
    ))
}

/// Upstream answers a binding with a success Status whose code is the 201 it sends.
fn created() -> Response {
    let mut s = crate::status::success();
    s["code"] = json!(201);
    json_response(StatusCode::CREATED, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_names_its_pod_and_a_node() {
        let ok = json!({"metadata": {"name": "p", "annotations": {"a": "b"}},
            "target": {"kind": "Node", "name": "n1"}});
        let r = parse("p", &ok).unwrap();
        assert_eq!(r.node, "n1");
        assert_eq!(r.annotations["a"], "b");
        assert_eq!(parse("q", &ok).err().unwrap().code, StatusCode::BAD_REQUEST);
        let bad = json!({"metadata": {"name": "p"}, "target": {"kind": "Pod"}});
        let e = parse("p", &bad).err().unwrap();
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("target.kind") && e.message.contains("target.name"));
    }

    #[test]
    fn binding_replaces_the_scheduled_condition() {
        let req = parse(
            "p",
            &json!({"metadata": {"name": "p"}, "target": {"name": "n1"}}),
        )
        .unwrap();
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"}]}});
        bind(&mut pod, &req);
        assert_eq!(pod["spec"]["nodeName"], "n1");
        let c = &pod["status"]["conditions"];
        assert_eq!(c.as_array().map(Vec::len), Some(1));
        assert_eq!(c[0]["status"], "True");
        assert!(c[0].get("reason").is_none() && c[0]["lastTransitionTime"].is_string());
    }
}
