//! Upstream's controller roles (bootstrappolicy's controller_policy.go and namespace_policy.go,
//! 1.33): a `system:controller:<sa>` ClusterRole per kube-controller-manager loop bound to the
//! ServiceAccount `kube-system/<sa>` it runs as, and the kube-system/kube-public Roles.

use serde_json::{json, Value};

use super::bootstrap_policy::{events, named, r, role, Subject, READ};

/// Upstream's prefix of every controller role and binding.
pub const CONTROLLER_ROLE_PREFIX: &str = "system:controller:";

const APPS: &[&str] = &["apps"];
const APPS_EXT: &[&str] = &["apps", "extensions"];
const BATCH: &[&str] = &["batch"];
const CORE: &[&str] = &[""];
const STORAGE: &[&str] = &["storage.k8s.io"];
const CERTS: &[&str] = &["certificates.k8s.io"];

/// (service account, rules) of every controller role enabled by default in 1.33 — those of
/// loops capstan does not run too, so `kubectl get clusterroles` lists what upstream's does.
fn controller_rules() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "attachdetach-controller",
            vec![
                r(
                    &["list", "watch"],
                    CORE,
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                r(READ, CORE, &["nodes"]),
                r(&["patch", "update"], CORE, &["nodes/status"]),
                r(&["list", "watch"], CORE, &["pods"]),
                events(),
                r(
                    &["get", "create", "delete", "list", "watch"],
                    STORAGE,
                    &["volumeattachments"],
                ),
                r(&["get", "watch", "list"], STORAGE, &["csidrivers"]),
                r(&["get", "watch", "list"], STORAGE, &["csinodes"]),
            ],
        ),
        (
            "clusterrole-aggregation-controller",
            vec![r(
                &["escalate", "get", "list", "watch", "update", "patch"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            )],
        ),
        (
            "cronjob-controller",
            vec![
                r(&["get", "list", "watch", "update"], BATCH, &["cronjobs"]),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "delete", "patch",
                    ],
                    BATCH,
                    &["jobs"],
                ),
                r(&["update"], BATCH, &["cronjobs/status"]),
                r(&["update"], BATCH, &["cronjobs/finalizers"]),
                r(&["list", "watch", "delete"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                r(READ, &["extensions", "apps"], &["daemonsets"]),
                r(&["update"], &["extensions", "apps"], &["daemonsets/status"]),
                r(
                    &["update"],
                    &["extensions", "apps"],
                    &["daemonsets/finalizers"],
                ),
                r(&["list", "watch"], CORE, &["nodes"]),
                r(
                    &["list", "watch", "create", "delete", "patch"],
                    CORE,
                    &["pods"],
                ),
                r(&["create"], CORE, &["pods/binding"]),
                r(
                    &[
                        "get", "list", "watch", "create", "delete", "update", "patch",
                    ],
                    APPS,
                    &["controllerrevisions"],
                ),
                events(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &["extensions", "apps"],
                    &["deployments"],
                ),
                r(
                    &["update"],
                    &["extensions", "apps"],
                    &["deployments/status"],
                ),
                r(
                    &["update"],
                    &["extensions", "apps"],
                    &["deployments/finalizers"],
                ),
                r(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    APPS_EXT,
                    &["replicasets"],
                ),
                r(&["get", "list", "watch", "update"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                r(READ, &["extensions", "apps"], &["deployments"]),
                r(READ, APPS_EXT, &["replicasets"]),
                r(READ, CORE, &["replicationcontrollers"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(READ, APPS, &["statefulsets"]),
                r(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                r(&["patch", "update"], CORE, &["pods/status"]),
                r(&["get"], &["*"], &["*/scale"]),
                events(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                r(READ, CORE, &["services", "pods"]),
                r(
                    &["get", "list", "watch", "create", "update", "delete"],
                    CORE,
                    &["endpoints"],
                ),
                r(&["create"], CORE, &["endpoints/restricted"]),
                events(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                r(READ, CORE, &["services", "pods", "nodes"]),
                r(&["update"], CORE, &["services/finalizers"]),
                r(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                r(READ, CORE, &["services", "endpoints"]),
                r(&["update"], CORE, &["services/finalizers"]),
                r(&["update"], CORE, &["endpoints/finalizers"]),
                r(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        (
            "expand-controller",
            vec![
                r(
                    &["get", "list", "watch", "update", "patch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                r(
                    &["update", "patch"],
                    CORE,
                    &["persistentvolumeclaims/status"],
                ),
                r(READ, CORE, &["persistentvolumeclaims"]),
                events(),
                r(&["get"], CORE, &["services"]),
            ],
        ),
        (
            "ephemeral-volume-controller",
            vec![
                r(READ, CORE, &["pods"]),
                r(&["update"], CORE, &["pods/finalizers"]),
                r(
                    &["get", "list", "watch", "create"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                events(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                r(
                    &["get", "list", "watch", "patch", "update", "delete"],
                    &["*"],
                    &["*"],
                ),
                events(),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                r(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                r(&["get", "update"], &["*"], &["*/scale"]),
                r(&["list", "watch"], CORE, &["pods"]),
                r(&["list", "watch"], &["metrics.k8s.io"], &["pods"]),
                r(READ, &["custom.metrics.k8s.io"], &["*"]),
                r(READ, &["external.metrics.k8s.io"], &["*"]),
                events(),
            ],
        ),
        (
            "job-controller",
            vec![
                r(
                    &["get", "list", "watch", "update", "patch"],
                    BATCH,
                    &["jobs"],
                ),
                r(&["update"], BATCH, &["jobs/status"]),
                r(&["update"], BATCH, &["jobs/finalizers"]),
                r(
                    &["list", "watch", "create", "delete", "patch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                r(&["get", "list", "watch", "delete"], CORE, &["namespaces"]),
                r(
                    &["update"],
                    CORE,
                    &["namespaces/finalize", "namespaces/status"],
                ),
                r(
                    &["get", "list", "watch", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                r(
                    &["get", "list", "watch", "update", "delete", "patch"],
                    CORE,
                    &["nodes"],
                ),
                r(&["patch", "update"], CORE, &["nodes/status"]),
                r(&["patch", "update"], CORE, &["pods/status"]),
                r(&["list", "watch", "get", "delete"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                r(
                    &["get", "list", "watch", "update", "create", "delete"],
                    CORE,
                    &["persistentvolumes"],
                ),
                r(&["update"], CORE, &["persistentvolumes/status"]),
                r(
                    &["get", "list", "watch", "update"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(&["update"], CORE, &["persistentvolumeclaims/status"]),
                r(
                    &["list", "watch", "get", "create", "delete"],
                    CORE,
                    &["pods"],
                ),
                r(READ, STORAGE, &["storageclasses"]),
                r(&["list", "watch"], CORE, &["nodes"]),
                events(),
                r(&["watch"], CORE, &["events"]),
                r(&["get"], CORE, &["services"]),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                r(&["list", "watch", "delete"], CORE, &["pods"]),
                r(READ, CORE, &["nodes"]),
                r(&["patch"], CORE, &["pods/status"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    APPS_EXT,
                    &["replicasets"],
                ),
                r(&["update"], APPS_EXT, &["replicasets/status"]),
                r(&["update"], APPS_EXT, &["replicasets/finalizers"]),
                r(
                    &["list", "watch", "patch", "create", "delete"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "replication-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    CORE,
                    &["replicationcontrollers"],
                ),
                r(&["update"], CORE, &["replicationcontrollers/status"]),
                r(&["update"], CORE, &["replicationcontrollers/finalizers"]),
                r(
                    &["list", "watch", "patch", "create", "delete"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["update"], CORE, &["resourcequotas/status"]),
                events(),
            ],
        ),
        (
            "route-controller",
            vec![
                r(&["list", "watch"], CORE, &["nodes"]),
                r(&["patch"], CORE, &["nodes/status"]),
                events(),
            ],
        ),
        (
            "service-account-controller",
            vec![r(&["create"], CORE, &["serviceaccounts"]), events()],
        ),
        (
            "service-controller",
            vec![
                r(READ, CORE, &["services"]),
                r(&["patch", "update"], CORE, &["services/status"]),
                r(&["list", "watch"], CORE, &["nodes"]),
                events(),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                r(&["list", "watch"], CORE, &["pods"]),
                r(READ, APPS, &["statefulsets"]),
                r(&["update"], APPS, &["statefulsets/status"]),
                r(&["update"], APPS, &["statefulsets/finalizers"]),
                r(
                    &["get", "create", "delete", "update", "patch"],
                    CORE,
                    &["pods"],
                ),
                r(
                    &[
                        "get", "create", "delete", "update", "patch", "list", "watch",
                    ],
                    APPS,
                    &["controllerrevisions"],
                ),
                r(
                    &["get", "create", "list", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(&["update", "delete"], CORE, &["persistentvolumeclaims"]),
                r(&["update"], CORE, &["pods/finalizers"]),
                events(),
            ],
        ),
        (
            "ttl-controller",
            vec![
                r(&["update", "patch", "list", "watch"], CORE, &["nodes"]),
                events(),
            ],
        ),
        (
            "certificate-controller",
            vec![
                r(
                    &["get", "list", "watch", "delete"],
                    CERTS,
                    &["certificatesigningrequests"],
                ),
                r(
                    &["update"],
                    CERTS,
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                ),
                named(
                    &["approve"],
                    CERTS,
                    &["signers"],
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    &["sign"],
                    CERTS,
                    &["signers"],
                    &[
                        "kubernetes.io/legacy-unknown",
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                ),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                events(),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                r(&["list", "watch", "get"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "pv-protection-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    CORE,
                    &["persistentvolumes"],
                ),
                events(),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                r(&["get", "list", "watch", "delete"], BATCH, &["jobs"]),
                events(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![r(&["create", "update"], CORE, &["configmaps"]), events()],
        ),
        (
            "validatingadmissionpolicy-status-controller",
            vec![
                r(
                    READ,
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies"],
                ),
                r(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                events(),
            ],
        ),
        (
            "legacy-service-account-token-cleaner",
            vec![
                named(
                    &["get"],
                    CORE,
                    &["configmaps"],
                    &["kube-apiserver-legacy-service-account-token-tracking"],
                ),
                r(&["patch", "delete"], CORE, &["secrets"]),
            ],
        ),
    ]
}

/// capstan's prefix of the roles holding what its loops do beyond upstream's roles.
pub const CAPSTAN_CONTROLLER_ROLE_PREFIX: &str = "capstan:controller:";

/// What capstan's loops need beyond upstream's role: they write with merge patches where
/// upstream's loops send updates (a patch carries only the fields a loop owns and needs no
/// fresh copy), so `patch` where upstream grants `update`. Kept apart, so each
/// `system:controller:*` role stays upstream's.
fn capstan_extra_rules() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "daemon-set-controller",
            vec![r(&["patch"], APPS, &["daemonsets/status"])],
        ),
        (
            "deployment-controller",
            vec![r(&["patch"], APPS, &["deployments", "deployments/status"])],
        ),
        (
            "job-controller",
            vec![r(&["patch"], BATCH, &["jobs/status"])],
        ),
        (
            "persistent-volume-binder",
            vec![r(
                &["patch"],
                CORE,
                &[
                    "persistentvolumes",
                    "persistentvolumes/status",
                    "persistentvolumeclaims",
                    "persistentvolumeclaims/status",
                ],
            )],
        ),
        (
            "pv-protection-controller",
            vec![r(&["patch"], CORE, &["persistentvolumes"])],
        ),
        (
            "pvc-protection-controller",
            vec![r(&["patch"], CORE, &["persistentvolumeclaims"])],
        ),
        (
            "replicaset-controller",
            vec![r(&["patch"], APPS, &["replicasets/status"])],
        ),
        (
            "replication-controller",
            vec![r(&["patch"], CORE, &["replicationcontrollers/status"])],
        ),
        (
            "statefulset-controller",
            vec![
                r(&["patch"], APPS, &["statefulsets/status"]),
                r(&["patch"], CORE, &["persistentvolumeclaims"]),
            ],
        ),
    ]
}

/// The `system:controller:*` ClusterRoles, then capstan's `capstan:controller:*` additions.
pub fn cluster_roles() -> Vec<Value> {
    let upstream = controller_rules()
        .into_iter()
        .map(|(sa, rules)| role(&format!("{CONTROLLER_ROLE_PREFIX}{sa}"), &[], rules));
    let extra = capstan_extra_rules()
        .into_iter()
        .map(|(sa, rules)| role(&format!("{CAPSTAN_CONTROLLER_ROLE_PREFIX}{sa}"), &[], rules));
    upstream.chain(extra).collect()
}

/// Each controller role bound to its ServiceAccount in kube-system.
pub fn cluster_role_bindings() -> Vec<Value> {
    let upstream = controller_rules()
        .into_iter()
        .map(|(sa, _)| (CONTROLLER_ROLE_PREFIX, sa));
    let extra = capstan_extra_rules()
        .into_iter()
        .map(|(sa, _)| (CAPSTAN_CONTROLLER_ROLE_PREFIX, sa));
    upstream
        .chain(extra)
        .map(|(prefix, sa)| {
            super::bootstrap_policy::binding(
                &format!("{prefix}{sa}"),
                &[Subject::ServiceAccount("kube-system", sa)],
            )
        })
        .collect()
}

fn namespaced(kind: &str, namespace: &str, mut v: Value) -> Value {
    v["kind"] = json!(kind);
    v["metadata"]["namespace"] = json!(namespace);
    v
}

fn ns_role(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
    namespaced("Role", namespace, role(name, &[], rules))
}

fn ns_binding(namespace: &str, name: &str, role: &str, subjects: &[Subject<'_>]) -> Value {
    let mut v = super::bootstrap_policy::named_binding(name, role, subjects);
    v["roleRef"]["kind"] = json!("Role");
    namespaced("RoleBinding", namespace, v)
}

/// The Role kube-lease-manager's patches of the controller-manager Lease need beyond
/// upstream's `get`/`update` (client-go's leader election updates; this crate patches).
pub const KCM_LEASE_PATCH_ROLE: &str = "capstan:leader-locking-kube-controller-manager";
/// The same for the scheduler's `kube-scheduler` Lease (capstan's leader election patches).
pub const SCHED_LEASE_PATCH_ROLE: &str = "capstan:leader-locking-kube-scheduler";

/// Upstream's namespaced Roles and RoleBindings (kube-system, kube-public), plus capstan's one
/// for the controller-manager's Lease patches: (namespace, Roles, RoleBindings).
pub fn namespaced_policy() -> Vec<(&'static str, Vec<Value>, Vec<Value>)> {
    use Subject::*;
    const SYS: &str = "kube-system";
    const KCM: &str = "system:kube-controller-manager";
    const SCHED: &str = "system:kube-scheduler";
    let lock_kcm = "system::leader-locking-kube-controller-manager";
    let lock_sched = "system::leader-locking-kube-scheduler";
    let auth_reader = "extension-apiserver-authentication-reader";
    let signer = "system:controller:bootstrap-signer";
    let cleaner = "system:controller:token-cleaner";
    vec![
        (
            SYS,
            vec![
                ns_role(
                    SYS,
                    auth_reader,
                    vec![named(
                        READ,
                        CORE,
                        &["configmaps"],
                        &["extension-apiserver-authentication"],
                    )],
                ),
                ns_role(SYS, signer, vec![r(READ, CORE, &["secrets"])]),
                ns_role(
                    SYS,
                    cleaner,
                    vec![
                        r(&["get", "list", "watch", "delete"], CORE, &["secrets"]),
                        events(),
                    ],
                ),
                ns_role(
                    SYS,
                    lock_kcm,
                    vec![
                        r(&["watch"], CORE, &["configmaps"]),
                        named(
                            &["get", "update"],
                            CORE,
                            &["configmaps"],
                            &["kube-controller-manager"],
                        ),
                        r(
                            &["get", "watch", "list", "create", "update"],
                            &["coordination.k8s.io"],
                            &["leases"],
                        ),
                    ],
                ),
                ns_role(
                    SYS,
                    lock_sched,
                    vec![
                        r(&["watch"], CORE, &["configmaps"]),
                        named(
                            &["get", "update"],
                            CORE,
                            &["configmaps"],
                            &["kube-scheduler"],
                        ),
                    ],
                ),
                ns_role(
                    SYS,
                    KCM_LEASE_PATCH_ROLE,
                    vec![named(
                        &["patch"],
                        &["coordination.k8s.io"],
                        &["leases"],
                        &["kube-controller-manager"],
                    )],
                ),
                ns_role(
                    SYS,
                    SCHED_LEASE_PATCH_ROLE,
                    vec![named(
                        &["patch"],
                        &["coordination.k8s.io"],
                        &["leases"],
                        &["kube-scheduler"],
                    )],
                ),
            ],
            vec![
                ns_binding(
                    SYS,
                    "system::extension-apiserver-authentication-reader",
                    auth_reader,
                    &[User(KCM), User(SCHED)],
                ),
                ns_binding(
                    SYS,
                    lock_kcm,
                    lock_kcm,
                    &[
                        User(KCM),
                        ServiceAccount(SYS, "kube-controller-manager"),
                        ServiceAccount(SYS, "leader-election-controller"),
                    ],
                ),
                ns_binding(
                    SYS,
                    lock_sched,
                    lock_sched,
                    &[User(SCHED), ServiceAccount(SYS, "kube-scheduler")],
                ),
                ns_binding(
                    SYS,
                    signer,
                    signer,
                    &[ServiceAccount(SYS, "bootstrap-signer")],
                ),
                ns_binding(
                    SYS,
                    cleaner,
                    cleaner,
                    &[ServiceAccount(SYS, "token-cleaner")],
                ),
                ns_binding(
                    SYS,
                    KCM_LEASE_PATCH_ROLE,
                    KCM_LEASE_PATCH_ROLE,
                    &[User(KCM)],
                ),
                ns_binding(
                    SYS,
                    SCHED_LEASE_PATCH_ROLE,
                    SCHED_LEASE_PATCH_ROLE,
                    &[User(SCHED)],
                ),
            ],
        ),
        (
            "kube-public",
            vec![ns_role(
                "kube-public",
                signer,
                vec![
                    r(READ, CORE, &["configmaps"]),
                    named(&["update"], CORE, &["configmaps"], &["cluster-info"]),
                    events(),
                ],
            )],
            vec![ns_binding(
                "kube-public",
                signer,
                signer,
                &[ServiceAccount(SYS, "bootstrap-signer")],
            )],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_role_is_bound_to_its_service_account() {
        let roles = cluster_roles();
        let bindings = cluster_role_bindings();
        assert_eq!(roles.len(), bindings.len());
        let b = bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "system:controller:deployment-controller")
            .unwrap();
        assert_eq!(
            b["roleRef"]["name"],
            "system:controller:deployment-controller"
        );
        assert_eq!(b["subjects"][0]["kind"], "ServiceAccount");
        assert_eq!(b["subjects"][0]["namespace"], "kube-system");
        assert_eq!(b["subjects"][0]["name"], "deployment-controller");
        // The garbage collector may delete anything, CRDs' objects included.
        let gc = roles
            .iter()
            .find(|r| r["metadata"]["name"] == "system:controller:generic-garbage-collector")
            .unwrap();
        assert_eq!(gc["rules"][0]["resources"], json!(["*"]));
    }

    #[test]
    fn namespaced_roles_are_roles_and_their_bindings_name_roles() {
        for (ns, roles, bindings) in namespaced_policy() {
            for r in &roles {
                assert_eq!(r["kind"], "Role");
                assert_eq!(r["metadata"]["namespace"], ns);
            }
            for b in &bindings {
                assert_eq!(b["kind"], "RoleBinding");
                assert_eq!(b["roleRef"]["kind"], "Role");
                let role = b["roleRef"]["name"].as_str().unwrap();
                assert!(
                    roles.iter().any(|r| r["metadata"]["name"] == role),
                    "{role}"
                );
            }
        }
    }
}
