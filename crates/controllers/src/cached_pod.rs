//! The pod as the controllers' shared informer holds it: only the fields some loop reads,
//! in k8s-openapi's shape (same names and types), so a loop reads it as it reads a `Pod`.
//!
//! Why not k8s-openapi's `Pod`: its structs are large before any field is set (a `Pod` is
//! 2,176 B, each `Container` 2,120 B, each `ContainerStatus` 752 B, each `Volume` 3,208 B),
//! and the store holds one per pod for as long as it exists — with 30,000 pods that was most
//! of the controllers' memory. Deserialised straight from the watch, fields not named here
//! are skipped, never built. Loops write pods by patch or by building a k8s-openapi `Pod`
//! (from a template), never by sending a cached pod back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A pod: `metadata` whole (less managedFields, dropped by the informer), a slim spec and status.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

impl k8s_openapi::Resource for Pod {
    const API_VERSION: &'static str = <core::Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <core::Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <core::Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <core::Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <core::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for Pod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub active_deadline_seconds: Option<i64>,
    /// Boxed: most pods have none, and inline it would cost every pod its size.
    pub affinity: Option<Box<core::Affinity>>,
    pub containers: Vec<Container>,
    pub hostname: Option<String>,
    pub init_containers: Option<Vec<Container>>,
    pub node_name: Option<String>,
    pub overhead: Option<BTreeMap<String, Quantity>>,
    pub priority_class_name: Option<String>,
    pub restart_policy: Option<String>,
    pub subdomain: Option<String>,
    pub tolerations: Option<Vec<core::Toleration>>,
    /// Only volumes that refer to claims (`trim_for_cache` drops the others).
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub ports: Option<Vec<core::ContainerPort>>,
    pub resources: Option<core::ResourceRequirements>,
    pub restart_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    pub persistent_volume_claim: Option<core::PersistentVolumeClaimVolumeSource>,
    /// Boxed: the claim template is large inline and rare.
    pub ephemeral: Option<Box<core::EphemeralVolumeSource>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub conditions: Option<Vec<core::PodCondition>>,
    pub container_statuses: Option<Vec<ContainerStatus>>,
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<core::PodIP>>,
    pub qos_class: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    pub ready: bool,
    pub restart_count: i32,
    pub state: Option<core::ContainerState>,
}

capstan_scheduler::pod_resources_for!(PodSpec, Container);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_pod_is_a_fraction_of_k8s_openapis() {
        use std::mem::size_of;
        // The point of this type: what every pod costs before any field is set.
        assert!(size_of::<Pod>() * 2 < size_of::<core::Pod>());
        assert!(size_of::<Container>() * 8 < size_of::<core::Container>());
        assert!(size_of::<ContainerStatus>() * 3 < size_of::<core::ContainerStatus>());
        assert!(size_of::<Volume>() * 40 < size_of::<core::Volume>());
    }

    #[test]
    fn reads_what_the_api_serves_and_what_loops_ask() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "uid": "u1"},
            "spec": {
                "containers": [{"name": "c", "image": "i", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "64Mi"}}}],
                "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "100m"}}}],
                "overhead": {"cpu": "10m"},
                "nodeName": "n1", "priority": 7,
                "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "zone", "namespaceSelector": {}}]}}
            },
            "status": {"phase": "Failed", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
                "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3,
                    "image": "i", "imageID": "x",
                    "state": {"terminated": {"exitCode": 42, "reason": "Error"}}}]}
        }))
        .unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, "10.0.0.5");
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 3);
        let exit = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(exit.map(|t| t.exit_code), Some(42));
        assert!(spec.affinity.as_ref().unwrap().pod_affinity.is_some());
        // Upstream's request arithmetic over the slim shape: 250m + the sidecar's 100m + 10m.
        let req = capstan_scheduler::resources::pod_requests(spec);
        assert_eq!(req.milli_cpu, 360);
        let lim = capstan_scheduler::resources::pod_limits(spec);
        assert_eq!(lim.memory, 64 * 1024 * 1024);
        assert_eq!(
            <Pod as kube::Resource>::url_path(&(), Some("d")),
            "/api/v1/namespaces/d/pods"
        );
    }
}
