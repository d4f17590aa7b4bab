//! The built-in resource types kube-apiserver 1.33 serves, one row each: group/version,
//! kind, plural, scope, short names, categories, subresources, OpenAPI schema and strategy.

use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates,
    coordination, core, discovery, events, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;

use crate::types as k;
use crate::types::crd::ScalePaths;
use crate::types::registry::{rt, schema_of, ResourceType, SchemaDef};
use crate::types::strategy::Strategy;

/// A row under construction: namespaced, no status, NAME AGE, until told otherwise.
struct Row(ResourceType);

/// A row: the kind's names, its schema and its strategy (the module that knows the kind).
fn t(
    gv: &str,
    kind: &str,
    plural: &str,
    schema: SchemaDef,
    strategy: impl Strategy + 'static,
) -> Row {
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
        schema,
        std::sync::Arc::new(strategy),
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
        t("v1", "Namespace", "namespaces", schema_of::<core::v1::Namespace>(), k::core::namespace::Namespace)
        .cluster()
        .short(&["ns"])
        .status(),
        t("v1", "ConfigMap", "configmaps", schema_of::<core::v1::ConfigMap>(), k::core::config_map::ConfigMap)
        .short(&["cm"]),
        t("v1", "Secret", "secrets", schema_of::<core::v1::Secret>(), k::core::secret::Secret),
        t("v1", "ServiceAccount", "serviceaccounts", schema_of::<core::v1::ServiceAccount>(), k::core::service_account::ServiceAccount)
        .short(&["sa"])
        .subresources(&["token"]),
        t("v1", "Event", "events", schema_of::<core::v1::Event>(), k::core::event::Event)
            .short(&["ev"]),
        t("v1", "Pod", "pods", schema_of::<core::v1::Pod>(), k::core::pod::Pod)
            .short(&["po"])
            .status()
            .all()
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
        t("v1", "Service", "services", schema_of::<core::v1::Service>(), k::core::service::Service)
            .short(&["svc"])
            .status()
            .all()
            .subresources(&["proxy"]),
        t("v1", "Endpoints", "endpoints", schema_of::<core::v1::Endpoints>(), k::core::endpoints::Endpoints)
        .short(&["ep"]),
        t("v1", "Node", "nodes", schema_of::<core::v1::Node>(), k::core::node::Node)
            .cluster()
            .short(&["no"])
            .status()
            .subresources(&["proxy"]),
        t("v1", "PersistentVolume", "persistentvolumes", schema_of::<core::v1::PersistentVolume>(), k::core::persistent_volume::PersistentVolume)
        .cluster()
        .short(&["pv"])
        .status(),
        t("v1", "PersistentVolumeClaim", "persistentvolumeclaims", schema_of::<core::v1::PersistentVolumeClaim>(), k::core::persistent_volume_claim::PersistentVolumeClaim)
        .short(&["pvc"])
        .status(),
        t("v1", "ReplicationController", "replicationcontrollers", schema_of::<core::v1::ReplicationController>(), k::core::replication_controller::ReplicationController)
        .short(&["rc"])
        .status()
        .all()
        .scale(),
        t("v1", "ResourceQuota", "resourcequotas", schema_of::<core::v1::ResourceQuota>(), k::core::resource_quota::ResourceQuota)
        .short(&["quota"])
        .status(),
        t("v1", "LimitRange", "limitranges", schema_of::<core::v1::LimitRange>(), k::core::limit_range::LimitRange)
        .short(&["limits"]),
        t("v1", "PodTemplate", "podtemplates", schema_of::<core::v1::PodTemplate>(), k::core::pod_template::PodTemplate),
        // apps/v1
        t("apps/v1", "Deployment", "deployments", schema_of::<apps::v1::Deployment>(), k::apps::deployment::Deployment)
        .short(&["deploy"])
        .status()
        .all()
        .scale(),
        t("apps/v1", "ReplicaSet", "replicasets", schema_of::<apps::v1::ReplicaSet>(), k::apps::replica_set::ReplicaSet)
        .short(&["rs"])
        .status()
        .all()
        .scale(),
        t("apps/v1", "StatefulSet", "statefulsets", schema_of::<apps::v1::StatefulSet>(), k::apps::stateful_set::StatefulSet)
        .short(&["sts"])
        .status()
        .all()
        .scale(),
        t("apps/v1", "DaemonSet", "daemonsets", schema_of::<apps::v1::DaemonSet>(), k::apps::daemon_set::DaemonSet)
        .short(&["ds"])
        .status()
        .all(),
        t("apps/v1", "ControllerRevision", "controllerrevisions", schema_of::<apps::v1::ControllerRevision>(), k::apps::controller_revision::ControllerRevision),
        // batch/v1
        t("batch/v1", "Job", "jobs", schema_of::<batch::v1::Job>(), k::batch::job::Job)
            .status()
            .all(),
        t("batch/v1", "CronJob", "cronjobs", schema_of::<batch::v1::CronJob>(), k::batch::cron_job::CronJob)
        .short(&["cj"])
        .status()
        .all(),
        // autoscaling
        t("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", schema_of::<autoscaling::v2::HorizontalPodAutoscaler>(), k::autoscaling::horizontal_pod_autoscaler::HorizontalPodAutoscaler)
        .short(&["hpa"])
        .status()
        .all(),
        t("autoscaling/v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", schema_of::<autoscaling::v1::HorizontalPodAutoscaler>(), k::autoscaling::horizontal_pod_autoscaler::HorizontalPodAutoscaler)
        .short(&["hpa"])
        .status()
        .all(),
        // policy/v1
        t("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", schema_of::<policy::v1::PodDisruptionBudget>(), k::policy::pod_disruption_budget::PodDisruptionBudget)
        .short(&["pdb"])
        .status(),
        // networking.k8s.io/v1
        t("networking.k8s.io/v1", "Ingress", "ingresses", schema_of::<networking::v1::Ingress>(), k::networking::ingress::Ingress)
        .short(&["ing"])
        .status(),
        t("networking.k8s.io/v1", "IngressClass", "ingressclasses", schema_of::<networking::v1::IngressClass>(), k::networking::ingress_class::IngressClass)
        .cluster(),
        t("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", schema_of::<networking::v1::NetworkPolicy>(), k::networking::network_policy::NetworkPolicy)
        .short(&["netpol"]),
        // discovery.k8s.io/v1
        t("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", schema_of::<discovery::v1::EndpointSlice>(), k::discovery::endpoint_slice::EndpointSlice),
        // rbac.authorization.k8s.io/v1
        t("rbac.authorization.k8s.io/v1", "Role", "roles", schema_of::<rbac::v1::Role>(), k::rbac::role::Role),
        t("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", schema_of::<rbac::v1::RoleBinding>(), k::rbac::role_binding::RoleBinding),
        t("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", schema_of::<rbac::v1::ClusterRole>(), k::rbac::cluster_role::ClusterRole)
        .cluster(),
        t("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", schema_of::<rbac::v1::ClusterRoleBinding>(), k::rbac::cluster_role_binding::ClusterRoleBinding)
        .cluster(),
        // storage.k8s.io/v1
        t("storage.k8s.io/v1", "StorageClass", "storageclasses", schema_of::<storage::v1::StorageClass>(), k::storage::storage_class::StorageClass)
        .cluster()
        .short(&["sc"]),
        t("storage.k8s.io/v1", "CSIDriver", "csidrivers", schema_of::<storage::v1::CSIDriver>(), k::storage::c_s_i_driver::CSIDriver)
        .cluster(),
        t("storage.k8s.io/v1", "CSINode", "csinodes", schema_of::<storage::v1::CSINode>(), k::storage::c_s_i_node::CSINode)
        .cluster(),
        t("storage.k8s.io/v1", "VolumeAttachment", "volumeattachments", schema_of::<storage::v1::VolumeAttachment>(), k::storage::volume_attachment::VolumeAttachment)
        .cluster()
        .status(),
        // scheduling, node, certificates
        t("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", schema_of::<scheduling::v1::PriorityClass>(), k::scheduling::priority_class::PriorityClass)
        .cluster()
        .short(&["pc"]),
        t("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", schema_of::<node::v1::RuntimeClass>(), k::node::runtime_class::RuntimeClass)
        .cluster(),
        t("certificates.k8s.io/v1", "CertificateSigningRequest", "certificatesigningrequests", schema_of::<certificates::v1::CertificateSigningRequest>(), k::certificates::certificate_signing_request::CertificateSigningRequest)
        .cluster()
        .short(&["csr"])
        .status()
        .subresources(&["approval"]),
        // admissionregistration.k8s.io/v1 (stored; calling webhooks comes later)
        t("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", schema_of::<admission::ValidatingWebhookConfiguration>(), k::admissionregistration::validating_webhook_configuration::ValidatingWebhookConfiguration)
        .cluster()
        .categories(&["api-extensions"]),
        t("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", schema_of::<admission::MutatingWebhookConfiguration>(), k::admissionregistration::mutating_webhook_configuration::MutatingWebhookConfiguration)
        .cluster()
        .categories(&["api-extensions"]),
        t("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", schema_of::<admission::ValidatingAdmissionPolicy>(), k::admissionregistration::validating_admission_policy::ValidatingAdmissionPolicy)
        .cluster()
        .status()
        .categories(&["api-extensions"]),
        t("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", schema_of::<admission::ValidatingAdmissionPolicyBinding>(), k::admissionregistration::validating_admission_policy_binding::ValidatingAdmissionPolicyBinding)
        .cluster()
        .categories(&["api-extensions"]),
        // authentication.k8s.io: reviews answered on create, never stored
        t("authentication.k8s.io/v1", "TokenReview", "tokenreviews", schema_of::<authentication::v1::TokenReview>(), k::authentication::Review)
        .cluster(),
        t("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews", schema_of::<authentication::v1::SelfSubjectReview>(), k::authentication::Review)
        .cluster(),
        // kubectl 1.27's `auth whoami` asks v1beta1 (upstream still serves it in 1.33).
        t("authentication.k8s.io/v1beta1", "SelfSubjectReview", "selfsubjectreviews", schema_of::<authentication::v1::SelfSubjectReview>(), k::authentication::Review)
        .cluster(),
        // authorization.k8s.io: reviews answered on create, never stored
        t("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", schema_of::<authorization::v1::SubjectAccessReview>(), k::authentication::Review)
        .cluster(),
        t("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", schema_of::<authorization::v1::SelfSubjectAccessReview>(), k::authentication::Review)
        .cluster(),
        t("authorization.k8s.io/v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", schema_of::<authorization::v1::LocalSubjectAccessReview>(), k::authentication::Review),
        t("authorization.k8s.io/v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", schema_of::<authorization::v1::SelfSubjectRulesReview>(), k::authentication::Review)
        .cluster(),
        // events, leases, CRDs
        t("events.k8s.io/v1", "Event", "events", schema_of::<events::v1::Event>(), k::events::event::Event)
        .short(&["ev"]),
        t("coordination.k8s.io/v1", "Lease", "leases", schema_of::<coordination::v1::Lease>(), k::coordination::lease::Lease),
        t("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", schema_of::<apiext::CustomResourceDefinition>(), k::apiextensions::custom_resource_definition::CustomResourceDefinition)
        .cluster()
        .short(&["crd", "crds"])
        .status()
        .categories(&["api-extensions"]),
        // kube-aggregator's group: the Local APIService of every served group-version
        // (housekeeping::apiservices); aggregated API servers are not proxied.
        t("apiregistration.k8s.io/v1", "APIService", "apiservices", schema_of::<apiregistration::v1::APIService>(), k::apiregistration::api_service::ApiService)
        .cluster()
        .status()
        .categories(&["api-extensions"]),
    ];
    rows.into_iter().map(|r| r.0).collect()
}
