//! A refusal (the authorizer's, or the anonymous user's), worded as upstream's
//! `responsewriters.Forbidden`: `<resource> "<name>" is forbidden: User "u" cannot <verb> ...`.

use serde_json::{Map, Value};

use crate::serving::request_info::RequestInfo;
use crate::status::ApiError;

/// Upstream's `forbiddenMessage`: who cannot do what, where.
fn reason_text(info: &RequestInfo, username: &str) -> String {
    if !info.resource_request {
        return format!(
            "User {username:?} cannot {} path {:?}",
            info.verb, info.path
        );
    }
    let mut resource = info.resource.clone();
    if !info.subresource.is_empty() {
        resource = format!("{resource}/{}", info.subresource);
    }
    if info.namespace.is_empty() {
        format!(
            "User {username:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            info.verb, info.api_group
        )
    } else {
        format!(
            "User {username:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            info.verb, info.api_group, info.namespace
        )
    }
}

/// The 403 for `username` refused `info`; a non-empty authorizer `reason` is appended as
/// `: <reason>`, as upstream does.
pub fn forbidden(info: &RequestInfo, username: &str, reason: &str) -> ApiError {
    let mut why = reason_text(info, username);
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    if !info.resource_request {
        return ApiError::forbidden(format!("forbidden: {why}"))
            .with_details(Value::Object(Map::new()));
    }
    // NewForbidden: the group-qualified resource (without subresource) and the name.
    let qualified = match (info.resource.is_empty(), info.api_group.is_empty()) {
        (true, _) => String::new(),
        (false, true) => info.resource.clone(),
        (false, false) => format!("{}.{}", info.resource, info.api_group),
    };
    let message = match (qualified.is_empty(), info.name.is_empty()) {
        (true, _) => format!("forbidden: {why}"),
        (false, true) => format!("{qualified} is forbidden: {why}"),
        (false, false) => format!("{qualified} {:?} is forbidden: {why}", info.name),
    };
    let mut details = Map::new();
    for (k, v) in [
        ("name", &info.name),
        ("group", &info.api_group),
        ("kind", &info.resource),
    ] {
        if !v.is_empty() {
            details.insert(k.to_string(), Value::String(v.clone()));
        }
    }
    ApiError::forbidden(message).with_details(Value::Object(details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn info(method: &str, path: &str) -> RequestInfo {
        RequestInfo::new(method, path, &HashMap::new())
    }

    #[test]
    fn messages_match_upstream() {
        let e = forbidden(&info("GET", "/api/v1/namespaces/x/configmaps"), "alice", "");
        assert_eq!(e.message, "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"x\"");
        let e = forbidden(&info("GET", "/api/v1/nodes"), "alice", "");
        assert_eq!(e.message, "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope");
        let e = forbidden(&info("GET", "/api/v1/namespaces/x/pods/p/log"), "alice", "");
        assert_eq!(e.message, "pods \"p\" is forbidden: User \"alice\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"x\"");
        let e = forbidden(
            &info("GET", "/apis/apps/v1/namespaces/x/deployments/d"),
            "alice",
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found",
        );
        assert_eq!(e.message, "deployments.apps \"d\" is forbidden: User \"alice\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"x\": RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found");
        let e = forbidden(&info("GET", "/foo"), "x", "");
        assert_eq!(e.message, "forbidden: User \"x\" cannot get path \"/foo\"");
        assert_eq!(e.code.as_u16(), 403);
    }
}
