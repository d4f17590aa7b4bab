//! The Node authorizer, for the objects pods carry their secrets in: a node
//! (`system:node:<name>` in `system:nodes`) may read a Secret or ConfigMap, or request a
//! service-account token, only when a pod bound to it refers to that object.
//!
//! Upstream keeps a graph of pods, nodes and what they reference; capstan reads the pods of
//! the object's namespace from the store at decision time (these requests come when a pod
//! starts, not per packet). Without a relationship the authorizer has no opinion and RBAC
//! decides (the default node roles grant none of these), with upstream's reason attached.

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use serde_json::Value;

use crate::serving::request_info::RequestInfo;
use crate::serving::user_info::UserInfo;
use crate::status::ApiError;
use crate::types::core::pod_references::{self, Referenced};
use crate::AppState;

/// What the authorizer says about a node's request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a node, or not a resource this authorizer guards: RBAC alone decides.
    NotMine,
    Allow,
    /// RBAC decides; if it refuses, this is the reason given.
    NoOpinion(String),
}

/// The node's name when `user` is a node identity.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    user.node_name()
}

/// Which kind of reference a guarded request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guarded {
    Secret,
    ConfigMap,
    ServiceAccountToken,
}

fn guarded(info: &RequestInfo) -> Option<Guarded> {
    if !info.resource_request || !info.api_group.is_empty() {
        return None;
    }
    match (info.resource.as_str(), info.subresource.as_str()) {
        ("secrets", "") => Some(Guarded::Secret),
        ("configmaps", "") => Some(Guarded::ConfigMap),
        ("serviceaccounts", "token") => Some(Guarded::ServiceAccountToken),
        _ => None,
    }
}

pub async fn decide(
    state: &AppState,
    user: &UserInfo,
    info: &RequestInfo,
) -> Result<Verdict, ApiError> {
    let (Some(node), Some(kind)) = (node_name(user), guarded(info)) else {
        return Ok(Verdict::NotMine);
    };
    let read = matches!(info.verb.as_str(), "get" | "list" | "watch");
    let allowed_verb = match kind {
        Guarded::ServiceAccountToken => info.verb == "create",
        _ => read,
    };
    if !allowed_verb {
        return Ok(Verdict::NoOpinion(format!(
            "can only {} {}",
            if kind == Guarded::ServiceAccountToken {
                "create tokens for individual service accounts"
            } else {
                "read individual"
            },
            info.resource
        )));
    }
    if info.name.is_empty() || info.namespace.is_empty() {
        return Ok(Verdict::NoOpinion(format!(
            "can only read individual {} (by name, in a namespace)",
            info.resource
        )));
    }
    let related = pods_on(state, &info.namespace, node)
        .await?
        .iter()
        .any(|pod| refers(pod, kind, &info.name));
    Ok(if related {
        Verdict::Allow
    } else {
        Verdict::NoOpinion(format!(
            "no relationship found between node '{node}' and this object"
        ))
    })
}

/// The pods of `ns` bound to `node`.
async fn pods_on(state: &AppState, ns: &str, node: &str) -> Result<Vec<Value>, ApiError> {
    let rt = state
        .registry
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    let prefix = format!("{}{ns}/", rt.key_prefix());
    let all = state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
        .await?;
    let mut out = Vec::new();
    for kv in &all.kvs {
        let pod = crate::storage::decode_for(&rt, kv)?;
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) {
            out.push(pod);
        }
    }
    Ok(out)
}

/// Whether `pod` refers to the object `name` of kind `kind`: volumes (projected sources
/// too), env and envFrom of every container, image pull secrets, its service account.
fn refers(pod: &Value, kind: Guarded, name: &str) -> bool {
    if kind == Guarded::ServiceAccountToken {
        let sa = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        return sa == name;
    }
    let kind = match kind {
        Guarded::Secret => Referenced::Secret,
        _ => Referenced::ConfigMap,
    };
    pod_references::names(pod, kind).contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_refers_to_what_its_volumes_env_and_pull_secrets_name() {
        let pod = json!({"spec": {
            "serviceAccountName": "runner",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}, {"secret": {"name": "proj-secret"}}]}},
                {"name": "d", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]}],
        }});
        for s in [
            "pull",
            "vol-secret",
            "proj-secret",
            "csi-secret",
            "init-env",
        ] {
            assert!(refers(&pod, Guarded::Secret, s), "{s}");
        }
        for c in ["vol-cm", "kube-root-ca.crt", "env-cm"] {
            assert!(refers(&pod, Guarded::ConfigMap, c), "{c}");
        }
        assert!(!refers(&pod, Guarded::Secret, "vol-cm"));
        assert!(!refers(&pod, Guarded::ConfigMap, "vol-secret"));
        assert!(!refers(&pod, Guarded::Secret, "other"));
        assert!(refers(&pod, Guarded::ServiceAccountToken, "runner"));
        assert!(!refers(&pod, Guarded::ServiceAccountToken, "default"));
        assert!(refers(
            &json!({"spec": {}}),
            Guarded::ServiceAccountToken,
            "default"
        ));
    }

    #[test]
    fn only_node_identities_are_nodes() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: Default::default(),
        };
        assert_eq!(
            node_name(&user("system:node:a", &["system:nodes"])),
            Some("a")
        );
        assert_eq!(node_name(&user("system:node:a", &["other"])), None);
        assert_eq!(node_name(&user("system:node:", &["system:nodes"])), None);
        assert_eq!(node_name(&user("alice", &["system:nodes"])), None);
    }
}
