//! The NodeRestriction admission plugin: a node (`system:node:<name>` in `system:nodes`) may
//! write only its own Node, Lease and CSINode, the status of pods bound to it, and tokens
//! for those pods — so one node's credential cannot steer workloads or other nodes.
//!
//! RBAC gives every node the same rights on these resources; this plugin narrows them to
//! the node's own objects, with upstream's messages. Token requests and evictions do not
//! pass the write chain, so their handlers call [`admit_token`] and [`admit_eviction`].

use serde_json::Value;

use crate::admission::{forbidden, Attributes, Operation, Plugin, Verdict};
use crate::serving::user_info::UserInfo;
use crate::status::ApiError;
use crate::types::core::pod_references;
use crate::types::registry::ResourceType;
use crate::types::Target;
use crate::AppState;

const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub struct NodeRestriction;

/// The resources the plugin narrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restricted {
    Pods,
    Nodes,
    Claims,
    Leases,
    CsiNodes,
}

fn restricted(rt: &ResourceType) -> Option<Restricted> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => Some(Restricted::Pods),
        ("", "nodes") => Some(Restricted::Nodes),
        ("", "persistentvolumeclaims") => Some(Restricted::Claims),
        ("coordination.k8s.io", "leases") => Some(Restricted::Leases),
        ("storage.k8s.io", "csinodes") => Some(Restricted::CsiNodes),
        _ => None,
    }
}

/// Upstream's spelling of an operation in its messages.
fn spelled(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// Who the request comes from, when that is a node: None for anyone else, the node's name
/// otherwise — or why not, for `system:node:` with no name in `system:nodes`, which is
/// refused as upstream refuses it (no request may be matched to "some node").
fn node_of_requester(user: &UserInfo) -> Option<Result<String, String>> {
    let in_nodes = user.groups.iter().any(|g| g == "system:nodes");
    if !in_nodes || !user.username.starts_with("system:node:") {
        return None;
    }
    Some(
        user.node_name()
            .map(str::to_string)
            .ok_or_else(|| format!("could not determine node from user {:?}", user.username)),
    )
}

fn requester() -> Option<UserInfo> {
    crate::audit::notes::user().map(|u| u.0.as_ref().clone())
}

impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    fn handles(&self, _operation: Operation, rt: &ResourceType) -> bool {
        restricted(rt).is_some()
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            let Some(user) = requester() else {
                return Ok(());
            };
            let Some(node) = node_of_requester(&user) else {
                return Ok(());
            };
            let node = node.map_err(|why| forbidden(attrs, &why))?;
            let Some(kind) = restricted(&attrs.target.rt) else {
                return Ok(());
            };
            let sub = attrs.target.subresource.as_deref().unwrap_or("");
            let why = match kind {
                Restricted::Pods => match sub {
                    "" => pod(attrs, &node, obj).await?,
                    "status" => pod_status(attrs.operation, &node, obj, old),
                    _ => Some(format!(
                        "unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed"
                    )),
                },
                Restricted::Nodes => node_object(attrs, &node, obj, old),
                Restricted::Claims => match sub {
                    "status" => claim_status(attrs.operation, &node, obj, old),
                    _ => Some("may only update PVC status".to_string()),
                },
                Restricted::Leases => lease(attrs, &node),
                Restricted::CsiNodes => (attrs.name != node).then(|| {
                    "can only access CSINode with the same name as the requesting node".to_string()
                }),
            };
            match why {
                Some(why) => Err(forbidden(attrs, &why)),
                None => Ok(()),
            }
        })
    }
}

/// The stored object, or upstream's NotFound when it is gone.
async fn stored(attrs: &Attributes<'_>) -> Result<Value, ApiError> {
    let rt = &attrs.target.rt;
    crate::storage::read(
        attrs.state,
        rt,
        attrs.target.namespace.as_deref(),
        attrs.name,
    )
    .await?
    .map(|(obj, _)| obj)
    .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, attrs.name))
}

fn node_name_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A node creates only mirror pods bound to itself and deletes only pods bound to itself.
async fn pod(attrs: &Attributes<'_>, node: &str, obj: &Value) -> Result<Option<String>, ApiError> {
    Ok(match attrs.operation {
        Operation::Create => mirror_pod(attrs.state, node, obj).await?,
        Operation::Delete => {
            let existing = stored(attrs).await?;
            (node_name_of(&existing) != node).then(|| {
                format!("node {node:?} can only delete pods with spec.nodeName set to itself")
            })
        }
        Operation::Update => Some(format!(
            "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
            spelled(attrs.operation)
        )),
    })
}

/// upstream's admitPodCreate: a mirror pod of this node, owned by it, referring to no
/// other API object.
async fn mirror_pod(state: &AppState, node: &str, pod: &Value) -> Result<Option<String>, ApiError> {
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
    if !annotated {
        return Ok(Some(format!(
            "pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        )));
    }
    if node_name_of(pod) != node {
        return Ok(Some(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        )));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let owner = match owners {
        [] => {
            return Ok(Some(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            )))
        }
        [one] => one,
        _ => {
            return Ok(Some(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            )))
        }
    };
    let text = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or("");
    if text("apiVersion") != "v1" || text("kind") != "Node" || text("name") != node {
        return Ok(Some(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        )));
    }
    if owner.get("controller").and_then(Value::as_bool) != Some(true) {
        return Ok(Some(format!(
            "node {node:?} can only create pods with a controller owner reference set to itself"
        )));
    }
    if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
        return Ok(Some(format!(
            "node {node:?} must not set blockOwnerDeletion on an owner reference"
        )));
    }
    let nodes = state
        .registry
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let Some((stored_node, _)) = crate::storage::read(state, &nodes, None, node).await? else {
        return Err(ApiError::not_found("", "nodes", node));
    };
    let uid = crate::object::meta_str(&stored_node, "uid").unwrap_or("");
    if text("uid") != uid {
        return Ok(Some(format!(
            "node {node} UID mismatch: expected {} got {uid}",
            text("uid")
        )));
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Ok(Some(format!(
            "node {node:?} can not create pods that reference a service account"
        )));
    }
    if pod_references::refers_to_secrets(pod) {
        return Ok(Some(format!(
            "node {node:?} can not create pods that reference secrets"
        )));
    }
    if pod_references::refers_to_config_maps(pod) {
        return Ok(Some(format!(
            "node {node:?} can not create pods that reference configmaps"
        )));
    }
    let volumes = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let bundles = volumes.iter().any(|v| {
        v.pointer("/projected/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|src| src.get("clusterTrustBundle").is_some()))
    });
    if bundles {
        return Ok(Some(format!(
            "node {node:?} can not create pods that reference clustertrustbundles"
        )));
    }
    if volumes
        .iter()
        .any(|v| v.get("persistentVolumeClaim").is_some())
    {
        return Ok(Some(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        )));
    }
    Ok(None)
}

/// A node updates the status of its own pods, and not their labels through it.
fn pod_status(op: Operation, node: &str, new: &Value, old: Option<&Value>) -> Option<String> {
    let Some(old) = old.filter(|_| op == Operation::Update) else {
        return Some(format!("unexpected operation {:?}", spelled(op)));
    };
    if node_name_of(old) != node {
        return Some(format!(
            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
        ));
    }
    let labels = |p: &Value| {
        p.pointer("/metadata/labels")
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            .cloned()
    };
    // capstan's status endpoint already keeps the stored labels; upstream's pod status
    // strategy does not, hence its check here, kept for the same guarantee.
    if labels(old) != labels(new) {
        return Some(format!(
            "node {node:?} cannot update labels through pod status"
        ));
    }
    let claims = |p: &Value| p.pointer("/status/resourceClaimStatuses").cloned();
    if claims(old) != claims(new) {
        return Some(format!(
            "node {node:?} cannot update resource claim statues"
        ));
    }
    None
}

/// A node changes only its own claims' capacity, conditions and expansion state.
fn claim_status(op: Operation, node: &str, new: &Value, old: Option<&Value>) -> Option<String> {
    let Some(old) = old.filter(|_| op == Operation::Update) else {
        return Some(format!("unexpected operation {:?}", spelled(op)));
    };
    let comparable = |pvc: &Value| {
        let mut pvc = pvc.clone();
        if let Some(meta) = pvc.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        if let Some(status) = pvc.get_mut("status").and_then(Value::as_object_mut) {
            for f in [
                "capacity",
                "conditions",
                "allocatedResourceStatuses",
                "allocatedResources",
            ] {
                status.remove(f);
            }
        }
        pvc
    };
    let (old, new) = (comparable(old), comparable(new));
    if old == new {
        return None;
    }
    let changed: Vec<String> = ["metadata", "spec", "status"]
        .iter()
        .filter(|f| old.get(**f) != new.get(**f))
        .map(|f| f.to_string())
        .collect();
    Some(format!(
        "node {node:?} is not allowed to update fields other than status.capacity and status.conditions: {} changed",
        changed.join(", ")
    ))
}

/// upstream's admitNode: only its own Node; no configSource, taints or labels outside
/// the kubelet's own set.
fn node_object(
    attrs: &Attributes<'_>,
    node: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Option<String> {
    if attrs.name != node {
        return Some(format!(
            "node {node:?} is not allowed to modify node {:?}",
            attrs.name
        ));
    }
    let labels = |n: Option<&Value>| {
        n.and_then(|n| n.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    match attrs.operation {
        Operation::Create => {
            if obj
                .pointer("/spec/configSource")
                .is_some_and(|c| !c.is_null())
            {
                return Some(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let forbidden = forbidden_labels(&labels(Some(obj)), &Default::default());
            (!forbidden.is_empty()).then(|| {
                format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                )
            })
        }
        Operation::Update => {
            let source = |n: Option<&Value>| {
                n.and_then(|n| n.pointer("/spec/configSource"))
                    .filter(|c| !c.is_null())
                    .cloned()
            };
            let new_source = source(Some(obj));
            if new_source.is_some() && new_source != source(old) {
                return Some(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            let taints = |n: Option<&Value>| {
                n.and_then(|n| n.pointer("/spec/taints"))
                    .and_then(Value::as_array)
                    .filter(|t| !t.is_empty())
                    .cloned()
            };
            if taints(Some(obj)) != taints(old) {
                return Some(format!("node {node:?} is not allowed to modify taints"));
            }
            let forbidden = forbidden_labels(&labels(Some(obj)), &labels(old));
            // upstream's message names no node here.
            (!forbidden.is_empty())
                .then(|| format!("is not allowed to modify labels: {}", forbidden.join(", ")))
        }
        Operation::Delete => None,
    }
}

type Labels = serde_json::Map<String, Value>;

/// The label keys added, removed or changed between `new` and `old` that a node may not
/// touch (sorted): `node-restriction.kubernetes.io/` ones, and kubernetes.io / k8s.io ones
/// that are not the kubelet's own.
fn forbidden_labels(new: &Labels, old: &Labels) -> Vec<String> {
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            old.iter()
                .filter(|(k, v)| new.get(*k) != Some(*v))
                .map(|(k, _)| k.clone()),
        )
        .filter(|k| {
            let ns = label_namespace(k);
            in_domain(ns, "node-restriction.kubernetes.io")
                || ((in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io"))
                    && !is_kubelet_label(k))
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

/// `ns` is `domain` or a subdomain of it.
fn in_domain(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// The labels a kubelet sets on its own Node (upstream's kubeletapis.IsKubeletLabel).
fn is_kubelet_label(key: &str) -> bool {
    const OWN: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let ns = label_namespace(key);
    OWN.contains(&key)
        || in_domain(ns, "kubelet.kubernetes.io")
        || in_domain(ns, "node.kubernetes.io")
}

fn lease(attrs: &Attributes<'_>, node: &str) -> Option<String> {
    if attrs.target.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE) {
        return Some(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    (attrs.name != node)
        .then(|| "can only access node lease with the same name as the requesting node".into())
}

/// A request that skips the write chain (a token request, an eviction), as the chain's
/// attributes: the refusals read as the chain's do.
fn create_attrs<'a>(state: &'a AppState, target: &'a Target, name: &'a str) -> Attributes<'a> {
    Attributes {
        state,
        operation: Operation::Create,
        target,
        name,
        dry_run: false,
    }
}

/// `serviceaccounts/token` from a node (`target` names the service account): bound to a
/// pod, by uid, that runs on the node.
pub async fn admit_token(
    state: &AppState,
    target: &Target,
    bound: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = requester().and_then(|u| node_of_requester(&u)) else {
        return Ok(());
    };
    let attrs = create_attrs(state, target, target.name.as_deref().unwrap_or(""));
    let refused = |why: &str| forbidden(&attrs, why);
    let node = node.map_err(|why| refused(&why))?;
    let text = |f: &str| {
        bound
            .and_then(|b| b.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    if text("apiVersion") != "v1" || text("kind") != "Pod" || text("name").is_empty() {
        return Err(refused("node requested token not bound to a pod"));
    }
    if text("uid").is_empty() {
        return Err(refused(
            "node requested token with a pod binding without a uid",
        ));
    }
    let pods = state
        .registry
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let namespace = target.namespace.as_deref();
    let Some((pod, _)) = crate::storage::read(state, &pods, namespace, text("name")).await? else {
        return Err(ApiError::not_found("", "pods", text("name")));
    };
    if crate::object::meta_str(&pod, "uid") != Some(text("uid")) {
        return Err(refused(&format!(
            "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
            text("uid")
        )));
    }
    if node_name_of(&pod) != node {
        return Err(refused(
            "node requested token bound to a pod scheduled on a different node",
        ));
    }
    Ok(())
}

/// `pods/eviction` from a node (`target` names the pod, read as `pod`): only of a pod bound
/// to it.
pub fn admit_eviction(state: &AppState, target: &Target, pod: &Value) -> Result<(), ApiError> {
    let Some(node) = requester().and_then(|u| node_of_requester(&u)) else {
        return Ok(());
    };
    let attrs = create_attrs(state, target, target.name.as_deref().unwrap_or(""));
    let node = node.map_err(|why| forbidden(&attrs, &why))?;
    if node_name_of(pod) != node {
        return Err(forbidden(
            &attrs,
            &format!("node {node} can only evict pods with spec.nodeName set to itself"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Labels {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_node_may_set_only_the_kubelets_own_labels() {
        let new = labels(json!({
            "kubernetes.io/hostname": "n1",
            "node.kubernetes.io/exclude-from-external-load-balancers": "",
            "kubelet.kubernetes.io/x": "1",
            "example.com/team": "a",
            "node-role.kubernetes.io/control-plane": "true",
            "foo.node-restriction.kubernetes.io/pool": "gpu",
            "k8s.io/anything": "x",
        }));
        assert_eq!(
            forbidden_labels(&new, &Labels::new()),
            [
                "foo.node-restriction.kubernetes.io/pool",
                "k8s.io/anything",
                "node-role.kubernetes.io/control-plane"
            ]
        );
        // Unchanged labels are not the node's doing; removing one is.
        let old = new.clone();
        assert!(forbidden_labels(&new, &old).is_empty());
        let mut fewer = new.clone();
        fewer.remove("node-role.kubernetes.io/control-plane");
        assert_eq!(
            forbidden_labels(&fewer, &old),
            ["node-role.kubernetes.io/control-plane"]
        );
    }

    #[test]
    fn subdomains_count_and_lookalikes_do_not() {
        assert!(in_domain("kubernetes.io", "kubernetes.io"));
        assert!(in_domain("x.kubernetes.io", "kubernetes.io"));
        assert!(!in_domain("notkubernetes.io", "kubernetes.io"));
        assert!(!is_kubelet_label("node-role.kubernetes.io/worker"));
        assert!(is_kubelet_label("x.node.kubernetes.io/y"));
    }

    #[test]
    fn pod_status_keeps_labels_and_stays_on_the_node() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"nodeName": "n1"}});
        let same = json!({"metadata": {"labels": {"a": "1"}}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(Operation::Update, "n1", &same, Some(&old)), None);
        let relabelled = json!({"metadata": {"labels": {"a": "2"}}});
        assert_eq!(
            pod_status(Operation::Update, "n1", &relabelled, Some(&old)).as_deref(),
            Some("node \"n1\" cannot update labels through pod status")
        );
        assert_eq!(
            pod_status(Operation::Update, "n2", &same, Some(&old)).as_deref(),
            Some(
                "node \"n2\" can only update pod status for pods with spec.nodeName set to itself"
            )
        );
    }

    #[test]
    fn claim_status_may_change_capacity_and_conditions_only() {
        let old = json!({"metadata": {"name": "c", "resourceVersion": "5"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Bound"}});
        let grown = json!({"metadata": {"name": "c", "resourceVersion": "6"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}}});
        assert_eq!(
            claim_status(Operation::Update, "n1", &grown, Some(&old)),
            None
        );
        let rebound = json!({"metadata": {"name": "c", "labels": {"x": "y"}},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Lost"}});
        assert_eq!(
            claim_status(Operation::Update, "n1", &rebound, Some(&old)).as_deref(),
            Some("node \"n1\" is not allowed to update fields other than status.capacity and status.conditions: metadata, status changed")
        );
    }

    #[test]
    fn only_nodes_named_as_nodes_are_restricted() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        };
        assert_eq!(
            node_of_requester(&user("system:node:n1", &["system:nodes"])),
            Some(Ok("n1".into()))
        );
        assert_eq!(node_of_requester(&user("system:node:n1", &[])), None);
        assert_eq!(node_of_requester(&user("alice", &["system:nodes"])), None);
        assert!(matches!(
            node_of_requester(&user("system:node:", &["system:nodes"])),
            Some(Err(_))
        ));
    }
}
