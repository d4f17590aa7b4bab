//! Upstream's bootstrap RBAC policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy): the
//! default ClusterRoles and ClusterRoleBindings, created at server start when missing.

use serde_json::{json, Value};

use crate::rest;
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const READ_UPDATE: &[&str] = &["get", "list", "watch", "update", "patch"];

/// Upstream's mark of a default role or binding the server may reconcile.
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The key capstan wrote before it used upstream's (older data dirs carry it).
const OLD_AUTOUPDATE: &str = "rbac.authorization.k8s.io/autoupdate";

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// A resource rule.
pub(super) fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

/// A resource rule limited to names.
pub(super) fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

/// A non-resource rule.
fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

/// Upstream's `eventsRule()`.
pub(super) fn events() -> Value {
    r(
        &["create", "update", "patch"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

pub(super) fn role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": l,
            "annotations": {AUTOUPDATE: "true"},
        },
        "rules": rules,
    })
}

fn aggregated(name: &str, labels: &[(&str, &str)], selector_label: &str) -> Value {
    let mut v = role(name, labels, Vec::new());
    v["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]});
    v
}

fn node_rules() -> Vec<Value> {
    vec![
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        r(READ, &[""], &["services"]),
        r(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        r(&["update", "patch"], &[""], &["nodes/status"]),
        r(&["update", "patch"], &[""], &["nodes"]),
        r(&["create", "update", "patch"], &[""], &["events"]),
        r(READ, &[""], &["pods"]),
        r(&["create", "delete"], &[""], &["pods"]),
        r(&["update", "patch"], &[""], &["pods/status"]),
        r(&["create"], &[""], &["pods/eviction"]),
        r(READ, &[""], &["secrets", "configmaps"]),
        r(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["get"], &[""], &["endpoints"]),
        r(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        r(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        r(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        r(&["create"], &[""], &["serviceaccounts/token"]),
        r(
            &["get", "watch", "list"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
        r(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        r(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
    ]
}

/// The default ClusterRoles (aggregated ones with empty rules: see `aggregate`).
pub fn cluster_roles() -> Vec<Value> {
    vec![
        role(
            "cluster-admin",
            &[],
            vec![r(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            &[],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                // `kubectl auth whoami` (upstream added it with SelfSubjectReview).
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        aggregated("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                r(
                    WRITE,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                    ],
                ),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["jobs", "cronjobs"]),
                r(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/status",
                        "statefulsets/scale",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                r(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        role("system:node", &[], node_rules()),
        role(
            "system:node-proxier",
            &[],
            vec![
                r(&["list", "watch"], &[""], &["services", "endpoints"]),
                r(&["get", "list", "watch"], &[""], &["nodes"]),
                events(),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        // What capstan's node agent does beyond a kubelet's `system:node`: it is also the
        // node's Service proxy (`system:node-proxier`), NetworkPolicy enforcer, cluster DNS
        // (its own kube-dns EndpointSlice) and local-path provisioner.
        role(
            NODE_ROLE,
            &[],
            node_rules()
                .into_iter()
                .filter_map(|mut rule| {
                    let resources = rule["resources"].as_array()?.clone();
                    let kept: Vec<Value> = resources
                        .into_iter()
                        .filter(|r| {
                            !matches!(
                                r.as_str(),
                                Some("secrets" | "configmaps" | "serviceaccounts/token")
                            )
                        })
                        .collect();
                    (!kept.is_empty()).then(|| {
                        rule["resources"] = Value::Array(kept);
                        rule
                    })
                })
                .collect(),
        ),
        role(
            NODE_AGENT_ROLE,
            &[],
            vec![
                r(READ, &["networking.k8s.io"], &["networkpolicies"]),
                r(READ, &[""], &["namespaces", "endpoints"]),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                events(),
            ],
        ),
        role(
            "system:node-bootstrapper",
            &[],
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        // The CSR auto-approval roles upstream's bootstrap policy ships: who may have a
        // kubelet client certificate approved for a new node, or renewed for itself.
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            &[],
            vec![named(
                &["approve"],
                &["certificates.k8s.io"],
                &["signers"],
                &["kubernetes.io/kube-apiserver-client"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            &[],
            vec![named(
                &["approve"],
                &["certificates.k8s.io"],
                &["signers"],
                &["kubernetes.io/kube-apiserver-client-kubelet"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kubelet-serving-approver",
            &[],
            vec![named(
                &["approve"],
                &["certificates.k8s.io"],
                &["signers"],
                &["kubernetes.io/kubelet-serving"],
            )],
        ),
        role(
            "system:auth-delegator",
            &[],
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:kubelet-api-admin",
            &[],
            vec![
                r(&["get", "list", "watch"], &[""], &["nodes"]),
                r(&["proxy"], &[""], &["nodes"]),
                r(
                    &["*"],
                    &[""],
                    &[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/spec",
                        "nodes/stats",
                        "nodes/log",
                    ],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            &[],
            vec![
                events(),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                r(&["create"], &[""], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[""], &["secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                r(&["update"], &[""], &["secrets", "serviceaccounts"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            &[],
            vec![
                events(),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                r(READ, &[""], &["nodes"]),
                r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                r(&["create"], &[""], &["pods/binding", "bindings"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(READ, &[""], &["services", "replicationcontrollers"]),
                r(READ, &["apps", "extensions"], &["replicasets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(READ, &["storage.k8s.io"], &["csinodes"]),
                // The namespaces inter-pod affinity's namespaceSelector picks.
                r(READ, &[""], &["namespaces"]),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
        role(
            "system:volume-scheduler",
            &[],
            vec![
                r(READ_UPDATE, &[""], &["persistentvolumes"]),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(READ_UPDATE, &[""], &["persistentvolumeclaims"]),
            ],
        ),
        role(
            "system:kube-dns",
            &[],
            vec![r(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        role(
            "system:persistent-volume-provisioner",
            &[],
            vec![
                r(
                    &["get", "list", "watch", "create", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(&["watch"], &[""], &["events"]),
                events(),
            ],
        ),
        role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
    ]
}

/// A subject of a default binding.
pub(super) enum Subject<'a> {
    User(&'a str),
    Group(&'a str),
    ServiceAccount(&'a str, &'a str),
}

pub(super) fn binding(role: &str, subjects: &[Subject<'_>]) -> Value {
    named_binding(role, role, subjects)
}

/// A default binding whose name is not its role's.
pub(super) fn named_binding(name: &str, role: &str, subjects: &[Subject<'_>]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| match s {
            Subject::User(n) => {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": n})
            }
            Subject::Group(n) => {
                json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": n})
            }
            Subject::ServiceAccount(ns, n) => {
                json!({"kind": "ServiceAccount", "namespace": ns, "name": n})
            }
        })
        .collect();
    let mut v = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {AUTOUPDATE: "true"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
    });
    if !subjects.is_empty() {
        v["subjects"] = json!(subjects);
    }
    v
}

/// The group of every node's identity (`system:node:<name>`).
const NODES_GROUP: &str = "system:nodes";
/// `system:node`'s rules but those the Node authorizer decides per object.
const NODE_ROLE: &str = "capstan:node";
/// The node agent's extra rules (see `cluster_roles`).
const NODE_AGENT_ROLE: &str = "capstan:node-agent";

/// The group every bootstrap token's user is in.
const BOOTSTRAPPERS: &str = crate::serving::bootstrap_token::BOOTSTRAPPERS_GROUP;

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    use Subject::*;
    vec![
        binding("cluster-admin", &[Group("system:masters")]),
        binding("system:discovery", &[Group("system:authenticated")]),
        binding("system:basic-user", &[Group("system:authenticated")]),
        binding(
            "system:public-info-viewer",
            &[
                Group("system:authenticated"),
                Group("system:unauthenticated"),
            ],
        ),
        binding("system:node-proxier", &[User("system:kube-proxy")]),
        binding(
            "system:kube-controller-manager",
            &[User("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-dns",
            &[ServiceAccount("kube-system", "kube-dns")],
        ),
        binding("system:kube-scheduler", &[User("system:kube-scheduler")]),
        binding("system:volume-scheduler", &[User("system:kube-scheduler")]),
        // Upstream keeps it without subjects: the Node authorizer covers nodes.
        binding("system:node", &[]),
        binding(
            "system:service-account-issuer-discovery",
            &[Group("system:serviceaccounts")],
        ),
        // Joined nodes (`system:node:<name>` in `system:nodes`) run the agent: the group holds
        // `system:node` without Secrets, ConfigMaps and tokens, which the Node authorizer
        // grants per object (upstream leaves `system:node` unbound and has the authorizer
        // decide the rest too).
        named_binding("capstan:nodes", NODE_ROLE, &[Group(NODES_GROUP)]),
        named_binding(
            "capstan:nodes-proxier",
            "system:node-proxier",
            &[Group(NODES_GROUP)],
        ),
        named_binding(
            "capstan:nodes-agent",
            NODE_AGENT_ROLE,
            &[Group(NODES_GROUP)],
        ),
        // What kubeadm and k3s bind for joining nodes: a bootstrap token may file CSRs and
        // have its node client certificate auto-approved; a node may renew its own.
        named_binding(
            "capstan:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[Group(BOOTSTRAPPERS)],
        ),
        named_binding(
            "capstan:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[Group(BOOTSTRAPPERS)],
        ),
        named_binding(
            "capstan:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[Group("system:nodes")],
        ),
    ]
}

/// Whether an aggregation selector picks `labels`: the shared LabelSelector matcher, except
/// that an empty selector picks nothing (upstream's aggregation skips it).
pub fn selector_matches(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let empty = selector
        .as_object()
        .is_none_or(|o| o.values().all(Value::is_null));
    !empty && crate::types::selector::label_selector_matches(selector, labels)
}

/// The rules an aggregated ClusterRole gets from `all` (upstream's aggregation controller:
/// matching roles by name, each rule once, the role itself excluded); None if `role` has no
/// aggregation rule.
pub fn aggregate(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)?;
    let name = role.pointer("/metadata/name").and_then(Value::as_str);
    let mut matching: Vec<&Value> = all
        .iter()
        .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) != name)
        .filter(|r| {
            let empty = serde_json::Map::new();
            let labels = r
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            selectors.iter().any(|s| selector_matches(s, labels))
        })
        .collect();
    matching.sort_by_key(|r| {
        r.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let mut rules: Vec<Value> = Vec::new();
    for r in matching {
        for rule in r
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// `cluster_roles()` with aggregated roles filled in (their sources may be aggregated too:
/// admin takes edit, which takes view).
fn aggregated_defaults() -> Vec<Value> {
    let mut roles = cluster_roles();
    for _ in 0..3 {
        let snapshot = roles.clone();
        for role in roles.iter_mut() {
            if let Some(rules) = aggregate(role, &snapshot) {
                role["rules"] = json!(rules);
            }
        }
    }
    roles
}

/// kubeadm's Role and RoleBinding letting anyone read the `kube-public/cluster-info`
/// discovery ConfigMap (see `housekeeping::bootstrap::ensure_cluster_info`).
fn cluster_info_policy() -> (Value, Value) {
    const NAME: &str = "kubeadm:bootstrap-signer-clusterinfo";
    let role = json!({
        "metadata": {"name": NAME, "namespace": "kube-public"},
        "rules": [named(&["get"], &[""], &["configmaps"], &["cluster-info"])],
    });
    let binding = json!({
        "metadata": {"name": NAME, "namespace": "kube-public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}],
    });
    (role, binding)
}

async fn ensure(state: &AppState, plural: &str, obj: Value) -> Result<(), ApiError> {
    ensure_in(state, plural, None, obj).await
}

async fn ensure_in(
    state: &AppState,
    plural: &str,
    namespace: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    let rt = state
        .registry
        .find("rbac.authorization.k8s.io", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let t = Target {
        rt,
        namespace: namespace.map(String::from),
        name: None,
        subresource: None,
        manager: None,
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let want = obj.clone();
    match rest::create_object(state, &t, obj, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => match want.get("rules") {
            Some(rules) if plural == "clusterroles" => {
                reconcile_rules(state, &t, &name, rules).await
            }
            _ if plural.ends_with("bindings") => reconcile_binding(state, &t, &name, want).await,
            _ => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// Whether a stored default object is still marked for reconciliation.
fn autoupdate(obj: &Value) -> bool {
    let annotations = obj.pointer("/metadata/annotations");
    let marked = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    marked(AUTOUPDATE).or(marked(OLD_AUTOUPDATE)) == Some("true")
}

/// Upstream's reconciliation of a default binding (non-tightening): while it is marked
/// `autoupdate: "true"`, the default subjects it lacks are added (subjects an admin added
/// stay), and one whose roleRef differs — which cannot be changed — is made again.
async fn reconcile_binding(
    state: &AppState,
    t: &Target,
    name: &str,
    want: Value,
) -> Result<(), ApiError> {
    let (old, rev) = rest::read_existing(state, t, name).await?;
    if !autoupdate(&old) {
        return Ok(());
    }
    let t = Target {
        name: Some(name.to_string()),
        ..t.clone()
    };
    if old.get("roleRef") != want.get("roleRef") {
        tracing::info!(verb = "delete", resource = %t.rt.plural, name, "default binding's roleRef differs: made again");
        let opts = rest::DeleteOptions {
            resource_version: Some(rev.to_string()),
            ..rest::DeleteOptions::default()
        };
        return match rest::delete_object(state, &t, name, &opts).await {
            Ok(_) => rest::create_object(state, &Target { name: None, ..t }, want, false)
                .await
                .map(|_| ()),
            // Another server got there first.
            Err(e) if e.reason == "Conflict" || e.reason == "NotFound" => Ok(()),
            Err(e) => Err(e),
        };
    }
    let have: Vec<Value> = old
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Subjects compare by kind, group, namespace and name (apiGroup defaults differ by kind).
    let key = |s: &Value| {
        let f = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        (f("kind"), f("namespace"), f("name"))
    };
    let missing: Vec<Value> = want
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|w| !have.iter().any(|h| key(h) == key(w)))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(verb = "update", resource = %t.rt.plural, name, added = missing.len(), "default binding reconciled");
    let mut new = old.clone();
    new["subjects"] = Value::Array(have.into_iter().chain(missing).collect());
    match rest::update_object(state, &t, old, rev, new, rev, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "Conflict" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Upstream's reconciliation of a default role (non-tightening): when the stored one is still
/// marked `rbac.authorization.kubernetes.io/autoupdate: "true"`, the default rules it lacks
/// are added (a newer version's additions reach an older data dir); rules an admin added stay,
/// and a role whose annotation is `"false"` is left as it is.
async fn reconcile_rules(
    state: &AppState,
    t: &Target,
    name: &str,
    want: &Value,
) -> Result<(), ApiError> {
    let (old, rev) = rest::read_existing(state, t, name).await?;
    if !autoupdate(&old) {
        return Ok(());
    }
    let have = old
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let have_rules: Vec<_> = have
        .iter()
        .map(crate::authz::rbac::PolicyRule::from_json)
        .collect();
    let missing: Vec<Value> = want
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| {
            let rule = crate::authz::rbac::PolicyRule::from_json(w);
            !crate::authz::rbac::covers(&have_rules, std::slice::from_ref(&rule)).0
        })
        .cloned()
        .collect();
    if missing.is_empty() || old.get("aggregationRule").is_some_and(|a| !a.is_null()) {
        return Ok(());
    }
    tracing::info!(
        verb = "update",
        resource = "clusterroles",
        name,
        added = missing.len(),
        "default role reconciled"
    );
    let mut new = old.clone();
    new["rules"] = Value::Array(have.into_iter().chain(missing).collect());
    if let Some(a) = new
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(OLD_AUTOUPDATE);
        a.insert(AUTOUPDATE.into(), json!("true"));
    }
    let t = Target {
        name: Some(name.to_string()),
        ..t.clone()
    };
    match rest::update_object(state, &t, old, rev, new, rev, false).await {
        Ok(_) => Ok(()),
        // Another server reconciled it meanwhile.
        Err(e) if e.reason == "Conflict" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the default roles and bindings that are missing, and reconcile those still marked
/// `autoupdate` (default rules and subjects added, never removed).
pub async fn ensure_bootstrap_policy(state: &AppState) -> Result<(), ApiError> {
    for role in aggregated_defaults()
        .into_iter()
        .chain(super::controller_policy::cluster_roles())
    {
        ensure(state, "clusterroles", role).await?;
    }
    for b in cluster_role_bindings()
        .into_iter()
        .chain(super::controller_policy::cluster_role_bindings())
    {
        ensure(state, "clusterrolebindings", b).await?;
    }
    for (namespace, roles, bindings) in super::controller_policy::namespaced_policy() {
        for role in roles {
            ensure_in(state, "roles", Some(namespace), role).await?;
        }
        for b in bindings {
            ensure_in(state, "rolebindings", Some(namespace), b).await?;
        }
    }
    let (role, binding) = cluster_info_policy();
    ensure_in(state, "roles", Some("kube-public"), role).await?;
    ensure_in(state, "rolebindings", Some("kube-public"), binding).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_edit_and_admin_aggregate_their_parts() {
        let roles = aggregated_defaults();
        let find = |n: &str| {
            roles
                .iter()
                .find(|r| r["metadata"]["name"] == n)
                .unwrap()
                .clone()
        };
        let view = crate::authz::rbac::PolicyRule::list_from(&find("view"));
        let edit = crate::authz::rbac::PolicyRule::list_from(&find("edit"));
        let admin = crate::authz::rbac::PolicyRule::list_from(&find("admin"));
        assert!(!view.is_empty());
        assert!(crate::authz::rbac::covers(&edit, &view).0);
        assert!(crate::authz::rbac::covers(&admin, &edit).0);
        // view reads no secrets; edit does.
        let secrets = crate::authz::rbac::PolicyRule::from_json(
            &json!({"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}),
        );
        assert!(!crate::authz::rbac::covers(&view, std::slice::from_ref(&secrets)).0);
        assert!(crate::authz::rbac::covers(&edit, &[secrets]).0);
    }
}
