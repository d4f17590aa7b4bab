//! The built-in resource types kube-apiserver 1.33 serves, one row each: group/version,
//! kind, plural, scope, short names, categories, subresources, printer and OpenAPI schema.

use k8s_openapi::api::{
    admissionregistration, apps, autoscaling, batch, certificates, coordination, core, discovery,
    events, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;

use crate::types::crd::ScalePaths;
use crate::types::registry::{rt, schema_of, Printer as P, ResourceType, SchemaFn};

/// A row under construction: namespaced, no status, NAME AGE, until told otherwise.
struct Row(ResourceType);

fn t(gv: &str, kind: &str, plural: &str, schema: SchemaFn) -> Row {
    let (group, version) = gv.split_once('/').unwrap_or(("", gv));
    Row(rt(
        group,
        version,
        kind,
        plural,
        &kind.to_lowercase(),
        true,
        &[],
        false,
        P::Default,
        schema,
    ))
}

impl Row {
    fn cluster(mut self) -> Self {
        self.0.namespaced = false;
        self
    }
    fn short(mut self, names: &[&str]) -> Self {
        self.0.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn status(mut self) -> Self {
        self.0.has_status = true;
        self
    }
    fn printer(mut self, p: P) -> Self {
        self.0.printer = p;
        self
    }
    /// In `kubectl get all`.
    fn all(mut self) -> Self {
        self.0.categories = vec!["all".into()];
        self
    }
    fn categories(mut self, c: &[&str]) -> Self {
        self.0.categories = c.iter().map(|s| s.to_string()).collect();
        self
    }
    /// `scale` at `spec.replicas`/`status.replicas`, selector from `spec.selector`.
    fn scale(mut self) -> Self {
        self.0.scale = Some(ScalePaths {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            label_selector: None,
            selector_from_spec: true,
        });
        self
    }
    fn subresources(mut self, subs: &[&str]) -> Self {
        self.0.subresources = subs.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Every built-in type.
pub fn builtin() -> Vec<ResourceType> {
    use admissionregistration::v1 as admission;
    use apiextensions::v1 as apiext;
    let rows = vec![
        // core/v1
        t(
            "v1",
            "Namespace",
            "namespaces",
            schema_of::<core::v1::Namespace>,
        )
        .cluster()
        .short(&["ns"])
        .status()
        .printer(P::Namespace),
        t(
            "v1",
            "ConfigMap",
            "configmaps",
            schema_of::<core::v1::ConfigMap>,
        )
        .short(&["cm"])
        .printer(P::ConfigMap),
        t("v1", "Secret", "secrets", schema_of::<core::v1::Secret>).printer(P::Secret),
        t(
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            schema_of::<core::v1::ServiceAccount>,
        )
        .short(&["sa"])
        .printer(P::ServiceAccount),
        t("v1", "Event", "events", schema_of::<core::v1::Event>)
            .short(&["ev"])
            .printer(P::Event),
        t("v1", "Pod", "pods", schema_of::<core::v1::Pod>)
            .short(&["po"])
            .status()
            .all()
            .printer(P::Pod)
            .subresources(&[
                "binding",
                "log",
                "exec",
                "attach",
                "portforward",
                "eviction",
                "ephemeralcontainers",
                "proxy",
            ]),
        t("v1", "Service", "services", schema_of::<core::v1::Service>)
            .short(&["svc"])
            .status()
            .all()
            .printer(P::Service)
            .subresources(&["proxy"]),
        t(
            "v1",
            "Endpoints",
            "endpoints",
            schema_of::<core::v1::Endpoints>,
        )
        .short(&["ep"])
        .printer(P::Endpoints),
        t("v1", "Node", "nodes", schema_of::<core::v1::Node>)
            .cluster()
            .short(&["no"])
            .status()
            .printer(P::Node)
            .subresources(&["proxy"]),
        t(
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            schema_of::<core::v1::PersistentVolume>,
        )
        .cluster()
        .short(&["pv"])
        .status()
        .printer(P::PersistentVolume),
        t(
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            schema_of::<core::v1::PersistentVolumeClaim>,
        )
        .short(&["pvc"])
        .status()
        .printer(P::PersistentVolumeClaim),
        t(
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            schema_of::<core::v1::ReplicationController>,
        )
        .short(&["rc"])
        .status()
        .all()
        .scale()
        .printer(P::ReplicationController),
        t(
            "v1",
            "ResourceQuota",
            "resourcequotas",
            schema_of::<core::v1::ResourceQuota>,
        )
        .short(&["quota"])
        .status()
        .printer(P::ResourceQuota),
        t(
            "v1",
            "LimitRange",
            "limitranges",
            schema_of::<core::v1::LimitRange>,
        )
        .short(&["limits"])
        .printer(P::CreatedAt),
        t(
            "v1",
            "PodTemplate",
            "podtemplates",
            schema_of::<core::v1::PodTemplate>,
        )
        .printer(P::PodTemplate),
        // apps/v1
        t(
            "apps/v1",
            "Deployment",
            "deployments",
            schema_of::<apps::v1::Deployment>,
        )
        .short(&["deploy"])
        .status()
        .all()
        .scale()
        .printer(P::Deployment),
        t(
            "apps/v1",
            "ReplicaSet",
            "replicasets",
            schema_of::<apps::v1::ReplicaSet>,
        )
        .short(&["rs"])
        .status()
        .all()
        .scale()
        .printer(P::ReplicaSet),
        t(
            "apps/v1",
            "StatefulSet",
            "statefulsets",
            schema_of::<apps::v1::StatefulSet>,
        )
        .short(&["sts"])
        .status()
        .all()
        .scale()
        .printer(P::StatefulSet),
        t(
            "apps/v1",
            "DaemonSet",
            "daemonsets",
            schema_of::<apps::v1::DaemonSet>,
        )
        .short(&["ds"])
        .status()
        .all()
        .printer(P::DaemonSet),
        t(
            "apps/v1",
            "ControllerRevision",
            "controllerrevisions",
            schema_of::<apps::v1::ControllerRevision>,
        )
        .printer(P::ControllerRevision),
        // batch/v1
        t("batch/v1", "Job", "jobs", schema_of::<batch::v1::Job>)
            .status()
            .all()
            .printer(P::Job),
        t(
            "batch/v1",
            "CronJob",
            "cronjobs",
            schema_of::<batch::v1::CronJob>,
        )
        .short(&["cj"])
        .status()
        .all()
        .printer(P::CronJob),
        // autoscaling
        t(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            schema_of::<autoscaling::v2::HorizontalPodAutoscaler>,
        )
        .short(&["hpa"])
        .status()
        .all()
        .printer(P::Hpa),
        t(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            schema_of::<autoscaling::v1::HorizontalPodAutoscaler>,
        )
        .short(&["hpa"])
        .status()
        .all()
        .printer(P::Hpa),
        // policy/v1
        t(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            schema_of::<policy::v1::PodDisruptionBudget>,
        )
        .short(&["pdb"])
        .status()
        .printer(P::Pdb),
        // networking.k8s.io/v1
        t(
            "networking.k8s.io/v1",
            "Ingress",
            "ingresses",
            schema_of::<networking::v1::Ingress>,
        )
        .short(&["ing"])
        .status()
        .printer(P::Ingress),
        t(
            "networking.k8s.io/v1",
            "IngressClass",
            "ingressclasses",
            schema_of::<networking::v1::IngressClass>,
        )
        .cluster()
        .printer(P::IngressClass),
        t(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            schema_of::<networking::v1::NetworkPolicy>,
        )
        .short(&["netpol"])
        .printer(P::NetworkPolicy),
        // discovery.k8s.io/v1
        t(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            schema_of::<discovery::v1::EndpointSlice>,
        )
        .printer(P::EndpointSlice),
        // rbac.authorization.k8s.io/v1
        t(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "roles",
            schema_of::<rbac::v1::Role>,
        )
        .printer(P::CreatedAt),
        t(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            schema_of::<rbac::v1::RoleBinding>,
        )
        .printer(P::RoleBinding),
        t(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            schema_of::<rbac::v1::ClusterRole>,
        )
        .cluster()
        .printer(P::CreatedAt),
        t(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            schema_of::<rbac::v1::ClusterRoleBinding>,
        )
        .cluster()
        .printer(P::RoleBinding),
        // storage.k8s.io/v1
        t(
            "storage.k8s.io/v1",
            "StorageClass",
            "storageclasses",
            schema_of::<storage::v1::StorageClass>,
        )
        .cluster()
        .short(&["sc"])
        .printer(P::StorageClass),
        t(
            "storage.k8s.io/v1",
            "CSIDriver",
            "csidrivers",
            schema_of::<storage::v1::CSIDriver>,
        )
        .cluster(),
        t(
            "storage.k8s.io/v1",
            "CSINode",
            "csinodes",
            schema_of::<storage::v1::CSINode>,
        )
        .cluster(),
        t(
            "storage.k8s.io/v1",
            "VolumeAttachment",
            "volumeattachments",
            schema_of::<storage::v1::VolumeAttachment>,
        )
        .cluster()
        .status(),
        // scheduling, node, certificates
        t(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            "priorityclasses",
            schema_of::<scheduling::v1::PriorityClass>,
        )
        .cluster()
        .short(&["pc"])
        .printer(P::PriorityClass),
        t(
            "node.k8s.io/v1",
            "RuntimeClass",
            "runtimeclasses",
            schema_of::<node::v1::RuntimeClass>,
        )
        .cluster()
        .printer(P::RuntimeClass),
        t(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            schema_of::<certificates::v1::CertificateSigningRequest>,
        )
        .cluster()
        .short(&["csr"])
        .status()
        .printer(P::Csr)
        .subresources(&["approval"]),
        // admissionregistration.k8s.io/v1 (stored; calling webhooks comes later)
        t(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            schema_of::<admission::ValidatingWebhookConfiguration>,
        )
        .cluster()
        .categories(&["api-extensions"])
        .printer(P::Webhooks),
        t(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            schema_of::<admission::MutatingWebhookConfiguration>,
        )
        .cluster()
        .categories(&["api-extensions"])
        .printer(P::Webhooks),
        t(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            schema_of::<admission::ValidatingAdmissionPolicy>,
        )
        .cluster()
        .status()
        .categories(&["api-extensions"]),
        t(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            schema_of::<admission::ValidatingAdmissionPolicyBinding>,
        )
        .cluster()
        .categories(&["api-extensions"]),
        // events, leases, CRDs
        t(
            "events.k8s.io/v1",
            "Event",
            "events",
            schema_of::<events::v1::Event>,
        )
        .short(&["ev"])
        .printer(P::Event),
        t(
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            schema_of::<coordination::v1::Lease>,
        )
        .printer(P::Lease),
        t(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            schema_of::<apiext::CustomResourceDefinition>,
        )
        .cluster()
        .short(&["crd", "crds"])
        .status()
        .categories(&["api-extensions"])
        .printer(P::Crd),
    ];
    rows.into_iter().map(|r| r.0).collect()
}
