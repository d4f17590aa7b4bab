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
use crate::AppState;

const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";

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
    let name = user.username.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
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
    referenced(pod, kind).contains(&name)
}

/// Whether a pod names any Secret (volumes, env, pull secrets, plugin secret refs).
pub fn refers_to_secrets(pod: &Value) -> bool {
    !referenced(pod, Guarded::Secret).is_empty()
}

/// Whether a pod names any ConfigMap (volumes, env).
pub fn refers_to_config_maps(pod: &Value) -> bool {
    !referenced(pod, Guarded::ConfigMap).is_empty()
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The names of the Secrets or ConfigMaps a pod refers to (upstream's
/// VisitPodSecretNames / VisitPodConfigmapNames over every container).
fn referenced<'p>(pod: &'p Value, kind: Guarded) -> Vec<&'p str> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    let mut push = |v: Option<&'p Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            out.push(n);
        }
    };
    let secrets = kind == Guarded::Secret;
    let (vol_key, vol_name, env_ref, from_ref) = if secrets {
        ("secret", "/secretName", "secretKeyRef", "secretRef")
    } else {
        ("configMap", "/name", "configMapKeyRef", "configMapRef")
    };
    for vol in list(spec, "volumes") {
        push(vol.get(vol_key).and_then(|v| v.pointer(vol_name)));
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(src.get(vol_key).and_then(|v| v.get("name")));
        }
        // CSI and other plugins' secret references.
        if secrets {
            for plugin in vol.as_object().into_iter().flat_map(|o| o.values()) {
                for k in ["secretRef", "nodePublishSecretRef"] {
                    push(plugin.get(k).and_then(|r| r.get("name")));
                }
            }
        }
    }
    if secrets {
        for s in list(spec, "imagePullSecrets") {
            push(s.get("name"));
        }
    }
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in list(spec, key) {
            for e in list(c, "env") {
                push(
                    e.get("valueFrom")
                        .and_then(|f| f.get(env_ref))
                        .and_then(|r| r.get("name")),
                );
            }
            for e in list(c, "envFrom") {
                push(e.get(from_ref).and_then(|r| r.get("name")));
            }
        }
    }
    out
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
