//! The authorization.k8s.io reviews: SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview and SelfSubjectRulesReview — answered on create, never stored.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::authz::rbac::PolicyRule;
use crate::authz::{is_privileged, Decision};
use crate::rest::json_response;
use crate::serving::request_info::RequestInfo;
use crate::serving::user_info::{User, UserInfo};
use crate::status::{ApiError, Cause};
use crate::types::Target;
use crate::AppState;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn invalid(t: &Target, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&t.rt.group, &t.rt.kind, "", causes)
}

/// The request a review's `spec` describes (`resourceAttributes` or `nonResourceAttributes`).
fn attributes(t: &Target, spec: &Value) -> Result<RequestInfo, ApiError> {
    let res = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (res, non) {
        (Some(_), Some(_)) => Err(invalid(
            t,
            vec![Cause::invalid(
                "spec.nonResourceAttributes",
                "",
                "cannot be specified in combination with resourceAttributes",
            )],
        )),
        (None, None) => Err(invalid(
            t,
            vec![Cause::invalid(
                "spec.resourceAttributes",
                "",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        )),
        (Some(r), None) => Ok(RequestInfo {
            resource_request: true,
            verb: s(r, "/verb").into(),
            api_group: s(r, "/group").into(),
            namespace: s(r, "/namespace").into(),
            resource: s(r, "/resource").into(),
            subresource: s(r, "/subresource").into(),
            name: s(r, "/name").into(),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(RequestInfo {
            resource_request: false,
            verb: s(n, "/verb").into(),
            path: s(n, "/path").into(),
            ..RequestInfo::default()
        }),
    }
}

/// The user a SubjectAccessReview's spec names.
fn spec_user(spec: &Value) -> UserInfo {
    let mut extra = BTreeMap::new();
    if let Some(m) = spec.get("extra").and_then(Value::as_object) {
        for (k, v) in m {
            let vals = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            extra.insert(k.clone(), vals);
        }
    }
    UserInfo {
        username: s(spec, "/user").into(),
        uid: s(spec, "/uid").into(),
        groups: super::rbac::strings(spec, "groups"),
        extra,
    }
}

fn status_of(d: Decision) -> Value {
    let (allowed, reason) = match d {
        Decision::Allow { reason } => (true, reason),
        Decision::Deny { reason } => (false, reason),
    };
    let mut st = json!({"allowed": allowed});
    if !reason.is_empty() {
        st["reason"] = json!(reason);
    }
    st
}

fn answer(t: &Target, mut review: Value, status: Value) -> Response {
    review["kind"] = json!(t.rt.kind);
    review["apiVersion"] = json!(t.rt.api_version());
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = json!(crate::object::now_rfc3339());
    review["status"] = status;
    json_response(StatusCode::CREATED, &review)
}

/// Answer a review the request addresses; `user` is who asks.
pub async fn create(
    state: &AppState,
    t: &Target,
    user: &User,
    review: Value,
) -> Result<Response, ApiError> {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    match t.rt.plural.as_str() {
        "selfsubjectaccessreviews" => {
            let info = attributes(t, &spec)?;
            let d = state.authz.decide_current(state, &user.0, &info).await;
            Ok(answer(t, review, status_of(d)))
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let mut info = attributes(t, &spec)?;
            let subject = spec_user(&spec);
            if subject.username.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    t,
                    vec![Cause::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            if let Some(ns) = &t.namespace {
                // A local review is about its own namespace only.
                if info.resource_request && !info.namespace.is_empty() && info.namespace != *ns {
                    return Err(invalid(
                        t,
                        vec![Cause::invalid(
                            "spec.resourceAttributes.namespace",
                            &info.namespace,
                            &format!("must match metadata.namespace: {ns:?}"),
                        )],
                    ));
                }
                if !info.resource_request {
                    return Err(invalid(
                        t,
                        vec![Cause::invalid(
                            "spec.nonResourceAttributes",
                            "",
                            "disallowed on this kind of request",
                        )],
                    ));
                }
                info.namespace = ns.clone();
            }
            let d = state.authz.decide_current(state, &subject, &info).await;
            Ok(answer(t, review, status_of(d)))
        }
        "selfsubjectrulesreviews" => {
            let namespace = s(&spec, "/namespace");
            Ok(answer(t, review, rules_review(state, &user.0, namespace)))
        }
        other => Err(ApiError::internal(format!(
            "no review is served as {other}"
        ))),
    }
}

/// SelfSubjectRulesReview's status: everything `user` may do in `namespace`.
fn rules_review(state: &AppState, user: &UserInfo, namespace: &str) -> Value {
    let mut rules: Vec<PolicyRule> = Vec::new();
    if is_privileged(user) {
        // Upstream's privileged-group authorizer lists everything.
        for r in [
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ] {
            rules.push(PolicyRule::from_json(&r));
        }
    }
    let (held, errors) = state.authz.snapshot().rules_for(user, namespace);
    rules.extend(held);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in &rules {
        if !r.resources.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}
