//! `GET .../pods/{name}/log`: validates the options and the container as upstream's pod
//! log REST does, then streams the pod's node's `/containerLogs/...` through.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::Value;

use crate::rest::node_proxy;
use crate::status::{ApiError, Cause};
use crate::types::Target;
use crate::AppState;

/// kubectl's annotation naming the container `kubectl logs` picks by default.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The options the kubelet is given, as upstream's `PodLogOptions` (validated).
#[derive(Debug, Default, PartialEq, Eq)]
struct LogQuery {
    container: String,
    follow: bool,
    previous: bool,
    timestamps: bool,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    insecure_skip_tls_verify_backend: bool,
}

fn flag(q: &HashMap<String, String>, k: &str) -> Result<bool, ApiError> {
    match q.get(k).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{k}: invalid value {v:?}: expected true or false"
        ))),
    }
}

fn number(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, ApiError> {
    q.get(k)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("{k}: invalid value {v:?}: expected an integer"))
            })
        })
        .transpose()
}

fn int_invalid(field: &str, value: i64, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {value}: {detail}"),
    }
}

fn parse(name: &str, q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let query = LogQuery {
        container: q.get("container").cloned().unwrap_or_default(),
        follow: flag(q, "follow")?,
        previous: flag(q, "previous")?,
        timestamps: flag(q, "timestamps")?,
        since_seconds: number(q, "sinceSeconds")?,
        since_time: q.get("sinceTime").filter(|t| !t.is_empty()).cloned(),
        tail_lines: number(q, "tailLines")?,
        limit_bytes: number(q, "limitBytes")?,
        insecure_skip_tls_verify_backend: flag(q, "insecureSkipTLSVerifyBackend")?,
    };
    // As upstream's ValidatePodLogOptions.
    let mut causes = Vec::new();
    if let Some(n) = query.tail_lines.filter(|n| *n < 0) {
        causes.push(int_invalid(
            "tailLines",
            n,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = query.limit_bytes.filter(|n| *n < 1) {
        causes.push(int_invalid("limitBytes", n, "must be greater than 0"));
    }
    match (query.since_seconds, &query.since_time) {
        (Some(_), Some(_)) => causes.push(Cause::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        )),
        (Some(n), None) if n < 1 => {
            causes.push(int_invalid("sinceSeconds", n, "must be greater than 0"))
        }
        _ => {}
    }
    if let Some(t) = &query.since_time {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return Err(ApiError::bad_request(format!(
                "sinceTime: invalid value {t:?}: expected an RFC 3339 time"
            )));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", name, causes));
    }
    Ok(query)
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(String::from))
        .collect()
}

/// The node the pod is bound to, or upstream's 400 for a pod that has none yet (shared by
/// pods/log and the connect subresources, as upstream's one node lookup).
pub fn node_of<'a>(pod: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(node) if !node.is_empty() => Ok(node),
        _ => Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        ))),
    }
}

/// The container to read: the one asked for (any kind: app, init, ephemeral), else the
/// only app container or the default-container annotation's; worded as upstream.
pub(crate) fn pick_container(pod: &Value, name: &str, asked: &str) -> Result<String, ApiError> {
    let app = names(pod.pointer("/spec/containers"));
    let init = names(pod.pointer("/spec/initContainers"));
    let ephemeral = names(pod.pointer("/spec/ephemeralContainers"));
    if !asked.is_empty() {
        let known = app
            .iter()
            .chain(&init)
            .chain(&ephemeral)
            .any(|c| c == asked);
        return if known {
            Ok(asked.to_string())
        } else {
            Err(ApiError::bad_request(format!(
                "container {asked} is not valid for pod {name}"
            )))
        };
    }
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|c| app.iter().chain(&init).any(|a| a == c));
    if let Some(c) = annotated {
        return Ok(c.to_string());
    }
    match app.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        many => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/containerLogs/{ns}/{pod}/{container}?...` as the API server asks the kubelet.
fn kubelet_path(ns: &str, pod: &str, container: &str, q: &LogQuery) -> String {
    let mut params: Vec<String> = Vec::new();
    if q.follow {
        params.push("follow=true".into());
    }
    if q.previous {
        params.push("previous=true".into());
    }
    if q.timestamps {
        params.push("timestamps=true".into());
    }
    if let Some(n) = q.since_seconds {
        params.push(format!("sinceSeconds={n}"));
    }
    if let Some(t) = &q.since_time {
        params.push(format!("sinceTime={}", escape(t)));
    }
    if let Some(n) = q.tail_lines {
        params.push(format!("tailLines={n}"));
    }
    if let Some(n) = q.limit_bytes {
        params.push(format!("limitBytes={n}"));
    }
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        escape(ns),
        escape(pod),
        escape(container)
    );
    if !params.is_empty() {
        path.push('?');
        path.push_str(&params.join("&"));
    }
    path
}

/// `GET .../pods/{name}/log`.
pub async fn get(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let q = parse(name, query)?;
    let (pod, _) = crate::rest::read_existing(state, t, name).await?;
    let container = pick_container(&pod, name, &q.container)?;
    let node = node_of(&pod, name)?;
    let path = kubelet_path(ns, name, &container, &q);
    tracing::debug!(namespace = ns, pod = name, %container, node, follow = q.follow, "proxying pod logs");
    node_proxy::get(state, node, &path, q.insecure_skip_tls_verify_backend).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_validated_as_upstream() {
        let e = parse("p", &q(&[("tailLines", "-1")])).expect_err("negative");
        assert_eq!(e.code.as_u16(), 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = parse("p", &q(&[("limitBytes", "0")])).expect_err("zero");
        assert_eq!(e.code.as_u16(), 422);
        let e = parse(
            "p",
            &q(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")]),
        )
        .expect_err("both");
        assert_eq!(e.code.as_u16(), 422);
        let ok = parse("p", &q(&[("tailLines", "3"), ("follow", "true")])).expect("valid");
        assert_eq!(
            kubelet_path("default", "p", "c", &ok),
            "/containerLogs/default/p/c?follow=true&tailLines=3"
        );
    }

    #[test]
    fn containers_are_picked_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        assert_eq!(
            pick_container(&pod, "p", "").expect_err("ambiguous").message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(
            pick_container(&pod, "p", "x").expect_err("unknown").message,
            "container x is not valid for pod p"
        );
        assert_eq!(pick_container(&pod, "p", "i").expect("init"), "i");
        let mut annotated = pod.clone();
        annotated["metadata"] = json!({"annotations": {DEFAULT_CONTAINER_ANNOTATION: "b"}});
        assert_eq!(pick_container(&annotated, "p", "").expect("default"), "b");
    }
}
