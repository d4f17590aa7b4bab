//! The part of a Pod the simulator needs (names, containers' probes, restart policy, exit
//! annotations, deletion, what status already says), extracted once per watch event so the
//! full object is not held for every pod.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{ANNOTATION_EXIT_AFTER, ANNOTATION_EXIT_CODE};
use crate::clock::{parse_duration, Millis};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// Milliseconds after start until `started` is true (startupProbe's initialDelaySeconds).
    pub started_after: Millis,
    /// Milliseconds after start until ready (readinessProbe's initialDelaySeconds, at least
    /// `started_after`); without a readiness probe a started container is ready.
    pub ready_after: Millis,
    /// An init container with `restartPolicy: Always` (a sidecar): it keeps running.
    pub sidecar: bool,
}

/// How the pod's containers end, from its annotations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    pub after: Millis,
    pub code: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub restart_policy: RestartPolicy,
    pub containers: Vec<ContainerView>,
    pub init_containers: Vec<ContainerView>,
    pub exit: Option<Exit>,
    /// Why the exit annotations could not be read (reported in the log once).
    pub exit_error: Option<String>,
    pub deletion: Option<Millis>,
    pub phase: Option<String>,
    pub pod_ip: Option<Ipv4Addr>,
    pub start_time: Option<Millis>,
    pub restart_count: i32,
    /// lastTransitionTime of a stored PodScheduled=True condition.
    pub scheduled_at: Option<Millis>,
    /// Each readiness gate's condition type and that condition's status, if it exists.
    pub readiness_gates: Vec<(String, Option<String>)>,
}

impl PodView {
    pub fn from_pod(pod: &Pod) -> Option<PodView> {
        let spec = pod.spec.as_ref()?;
        let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
        let (exit, exit_error) = exit_from(meta.annotations.as_ref());
        Some(PodView {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone()?,
            node,
            restart_policy: match spec.restart_policy.as_deref() {
                Some("Never") => RestartPolicy::Never,
                Some("OnFailure") => RestartPolicy::OnFailure,
                _ => RestartPolicy::Always,
            },
            containers: spec.containers.iter().map(container_view).collect(),
            init_containers: spec
                .init_containers
                .iter()
                .flatten()
                .map(container_view)
                .collect(),
            exit,
            exit_error,
            deletion: meta
                .deletion_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
            phase: status.and_then(|s| s.phase.clone()),
            pod_ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            start_time: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_millisecond()),
            restart_count: status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().map(|c| c.restart_count).max())
                .unwrap_or(0),
            scheduled_at: conditions
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.as_millisecond()),
            readiness_gates: spec
                .readiness_gates
                .iter()
                .flatten()
                .map(|g| {
                    let status = conditions
                        .iter()
                        .find(|c| c.type_ == g.condition_type)
                        .map(|c| c.status.clone());
                    (g.condition_type.clone(), status)
                })
                .collect(),
        })
    }
}

fn container_view(c: &Container) -> ContainerView {
    let delay = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.map(|p| p.initial_delay_seconds.unwrap_or(0).max(0) as Millis * 1000)
    };
    let started_after = delay(c.startup_probe.as_ref()).unwrap_or(0);
    let ready_after = delay(c.readiness_probe.as_ref())
        .unwrap_or(0)
        .max(started_after);
    ContainerView {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        started_after,
        ready_after,
        sidecar: c.restart_policy.as_deref() == Some("Always"),
    }
}

/// `sim.capstan.io/exit-after` (a duration: `5s`, `500ms`, `2m`) and `sim.capstan.io/exit-code`
/// (an integer, default 0). Without exit-after the containers run until deleted.
fn exit_from(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> (Option<Exit>, Option<String>) {
    let Some(a) = annotations else {
        return (None, None);
    };
    let Some(after) = a.get(ANNOTATION_EXIT_AFTER) else {
        return (None, None);
    };
    let Some(after) = parse_duration(after) else {
        return (
            None,
            Some(format!(
                "{ANNOTATION_EXIT_AFTER}: {after:?} is not a duration like 5s, 500ms or 2m"
            )),
        );
    };
    let code = match a.get(ANNOTATION_EXIT_CODE) {
        None => 0,
        Some(c) => match c.trim().parse::<i32>() {
            Ok(c) => c,
            Err(_) => {
                return (
                    None,
                    Some(format!("{ANNOTATION_EXIT_CODE}: {c:?} is not an integer")),
                )
            }
        },
    };
    (Some(Exit { after, code }), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_probes_policy_and_exit_annotations() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                "annotations": {"sim.capstan.io/exit-after": "2s", "sim.capstan.io/exit-code": "3"}},
            "spec": {"nodeName": "n1", "restartPolicy": "OnFailure",
                "initContainers": [{"name": "init", "image": "busybox"}, {"name": "side", "image": "envoy", "restartPolicy": "Always"}],
                "containers": [
                    {"name": "a", "image": "nginx", "readinessProbe": {"initialDelaySeconds": 5, "exec": {"command": ["true"]}}},
                    {"name": "b", "image": "redis", "startupProbe": {"initialDelaySeconds": 2, "exec": {"command": ["true"]}}}
                ]}
        }));
        let v = PodView::from_pod(&p).unwrap();
        assert_eq!(v.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(
            v.exit,
            Some(Exit {
                after: 2000,
                code: 3
            })
        );
        assert_eq!(v.containers[0].ready_after, 5000);
        assert_eq!(v.containers[1].started_after, 2000);
        assert_eq!(v.containers[1].ready_after, 2000);
        assert!(!v.init_containers[0].sidecar);
        assert!(v.init_containers[1].sidecar);
    }

    #[test]
    fn unbound_pods_are_not_ours_and_bad_annotations_are_reported() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": []}}),
        );
        assert!(PodView::from_pod(&p).is_none());
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u", "annotations": {"sim.capstan.io/exit-after": "soon"}},
            "spec": {"nodeName": "n", "containers": []}}));
        let v = PodView::from_pod(&p).unwrap();
        assert_eq!(v.exit, None);
        assert!(v.exit_error.unwrap().contains("not a duration"));
    }
}
