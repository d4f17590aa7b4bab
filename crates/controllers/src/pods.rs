//! What several loops ask of a pod (active, ready, available since when) and the pod a
//! workload's template makes, as upstream's controller helpers define them.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::cached_pod::Pod;

/// The annotation `kubectl apply` writes: a copy of the whole manifest, read by no loop.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the shared informer drops from a pod beyond what `cached_pod` never reads: the
/// last-applied annotation (a copy of the whole manifest), and volumes other than claims
/// (admission gives every pod a projected token volume, which no loop reads).
pub fn trim_for_cache(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if let Some(v) = spec.volumes.as_mut() {
        v.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        v.shrink_to_fit();
    }
    if spec.volumes.as_ref().is_some_and(Vec::is_empty) {
        spec.volumes = None;
    }
}

/// A whole pod, as a loop makes one to create it (the cache's `Pod` is slim and read-only).
pub type NewPod = k8s_openapi::api::core::v1::Pod;

/// Create `pod` in `ns` and read the answer as the cache holds pods (kube's typed
/// `Api::create` would send and answer the same type).
pub async fn create(
    client: &kube::Client,
    ns: &str,
    pp: &kube::api::PostParams,
    pod: &NewPod,
) -> Result<Pod, kube::Error> {
    let body = serde_json::to_vec(pod).map_err(kube::Error::SerdeError)?;
    let url = <Pod as kube::Resource>::url_path(&(), Some(ns));
    let mut req = kube::core::Request::new(url)
        .create(pp, body)
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("create");
    client.request::<Pod>(req).await
}

/// The cache's view of a pod a loop made (for bookkeeping until the informer has it).
pub fn as_cached(pod: &NewPod) -> Pod {
    capstan_slim::from_json(pod).unwrap_or_else(|_| Pod {
        metadata: pod.metadata.clone(),
        ..Default::default()
    })
}

/// `namespace/name`, the key loops use for back-off and expectations.
pub fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Succeeded or Failed: its containers will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Counted by a ReplicaSet: not terminal and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition last became True, if it is True now.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's IsPodAvailable).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// A pod made from `template` for the owner `owner` (upstream's GetPodFromTemplate): the
/// template's labels, annotations, finalizers and spec, `generateName` `<prefix>-`.
pub fn from_template(template: &PodTemplateSpec, owner: OwnerReference, prefix: &str) -> NewPod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    NewPod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cached_pod_keeps_what_loops_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "labels": {"app": "a"},
                "annotations": {LAST_APPLIED: "{...}", "controller.kubernetes.io/pod-deletion-cost": "5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "command": ["sh"], "env": [{"name": "X", "value": "1"}],
                    "ports": [{"name": "http", "containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m"}},
                    "volumeMounts": [{"name": "token", "mountPath": "/t"}],
                    "readinessProbe": {"exec": {"command": ["true"]}}}],
                "volumes": [
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "nodeName": "n1"
            },
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "ready": true,
                "restartCount": 0, "image": "busybox", "imageID": ""}]}
        }))
        .unwrap();
        trim_for_cache(&mut pod);
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(annotations.contains_key("controller.kubernetes.io/pod-deletion-cost"));
        assert!(pod.metadata.owner_references.is_some() && pod.metadata.labels.is_some());
        let spec = pod.spec.as_ref().unwrap();
        let names: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["data", "scratch"],
            "claims and ephemeral claims stay"
        );
        let c = &spec.containers[0];
        assert_eq!(c.name, "c");
        assert!(c.ports.is_some() && c.resources.is_some());
        // What containers run with is never built: it is not in the cached pod at all.
        let held = serde_json::to_value(&pod).unwrap();
        let container = held["spec"]["containers"][0].as_object().unwrap();
        for gone in ["command", "env", "volumeMounts", "readinessProbe"] {
            assert!(!container.contains_key(gone), "{gone} held: {container:?}");
        }
        assert!(held["spec"]["volumes"][0].get("projected").is_none());
        assert!(spec.tolerations.is_some() && spec.node_name.is_some());
        assert!(pod.status.as_ref().unwrap().container_statuses.is_some());
        // Without claims the volumes go entirely (no empty Vec kept).
        let mut plain: Pod = serde_json::from_value(json!({"spec": {"containers": [],
            "volumes": [{"name": "t", "emptyDir": {}}]}}))
        .unwrap();
        trim_for_cache(&mut plain);
        assert!(plain.spec.unwrap().volumes.is_none());
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(is_active(&pod) && is_ready(&pod));
        assert!(is_available(&pod, 0, t0));
        assert!(!is_available(&pod, 10, t0));
        assert!(is_available(
            &pod,
            10,
            "2026-01-01T00:00:10Z".parse().unwrap()
        ));
    }
}
