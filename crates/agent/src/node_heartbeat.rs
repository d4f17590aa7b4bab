//! What every node (real or simulated) writes as the kubelet writes it: its four conditions
//! with upstream's reasons and messages, its standard labels, and its Lease in
//! `kube-node-lease`, renewed in place.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};

use crate::clock::{rfc3339, rfc3339_micro, Millis};

/// The kubelet version nodes report: the Kubernetes minor the API server serves (v1.33),
/// since clients (kubectl's version skew warning, operators gating on it) compare the two.
pub const KUBELET_VERSION: &str = "v1.33.0";

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The labels the kubelet sets on its Node (hostname, os, arch, and their beta twins).
pub fn standard_labels(node: &str, arch: &str) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("beta.kubernetes.io/arch".into(), json!(arch));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(arch));
    labels.insert("kubernetes.io/hostname".into(), json!(node));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels
}

/// One node condition as the kubelet words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn new(type_: &'static str, status: &'static str, reason: &'static str, message: &str) -> Self {
        Condition {
            type_,
            status,
            reason,
            message: message.to_string(),
        }
    }

    pub fn memory_pressure(under_pressure: bool) -> Condition {
        if under_pressure {
            Condition::new(
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            Condition::new(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        }
    }

    pub fn disk_pressure(under_pressure: bool) -> Condition {
        if under_pressure {
            Condition::new(
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            Condition::new(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        }
    }

    pub fn pid_pressure(under_pressure: bool) -> Condition {
        if under_pressure {
            Condition::new(
                "PIDPressure",
                "True",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            Condition::new(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        }
    }

    /// Ready, or NotReady saying why (upstream: `container runtime is down`, ...).
    pub fn ready(problem: Option<&str>) -> Condition {
        match problem {
            None => Condition::new(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
            Some(why) => Condition::new("Ready", "False", "KubeletNotReady", why),
        }
    }

    /// The four conditions of a healthy node, in the kubelet's order.
    pub fn healthy() -> Vec<Condition> {
        vec![
            Condition::memory_pressure(false),
            Condition::disk_pressure(false),
            Condition::pid_pressure(false),
            Condition::ready(None),
        ]
    }
}

/// The conditions as JSON, heartbeat `now`. A condition whose status is unchanged keeps its
/// lastTransitionTime from `previous` (the stored conditions).
pub fn conditions_json(want: &[Condition], previous: Option<&Value>, now: Millis) -> Value {
    let stamp = rfc3339(now);
    Value::Array(
        want.iter()
            .map(|c| {
                let old = previous
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|p| p["type"] == c.type_));
                let transition = match old {
                    Some(p) if p["status"] == c.status => p["lastTransitionTime"].clone(),
                    _ => json!(stamp),
                };
                json!({
                    "type": c.type_,
                    "status": c.status,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": transition,
                    "reason": c.reason,
                    "message": c.message,
                })
            })
            .collect(),
    )
}

/// Whether `stored` (a Node's `status.conditions`) says anything other than `want` in
/// type/status/reason/message: then the status must be posted now.
pub fn conditions_differ(want: &[Condition], stored: Option<&Value>) -> bool {
    let Some(stored) = stored.and_then(Value::as_array) else {
        return true;
    };
    want.iter().any(|w| {
        !stored.iter().any(|s| {
            s["type"] == w.type_
                && s["status"] == w.status
                && s["reason"] == w.reason
                && s["message"] == w.message.as_str()
        })
    })
}

/// The node's Lease, owned by the Node (when its uid is known) as the kubelet makes it.
pub fn lease_manifest(node: &str, uid: Option<&str>, duration_seconds: i32, now: Millis) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": rfc3339_micro(now),
        },
    });
    if let Some(uid) = uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
    }
    lease
}

/// Renew the node's Lease (creating it if missing). `cached` is the copy last written: it
/// saves a GET per renewal, and is taken so a failed write leaves nothing stale behind.
pub async fn renew_lease(
    client: &kube::Client,
    node: &str,
    node_uid: Option<&str>,
    duration_seconds: i32,
    now: Millis,
    cached: &mut Option<Lease>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let current = match cached.take() {
        Some(l) => Some(l),
        None => api.get_opt(node).await?,
    };
    let written = match current {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(node.to_string());
            spec.lease_duration_seconds = Some(duration_seconds);
            spec.renew_time = jiff::Timestamp::from_millisecond(now).ok().map(MicroTime);
            // A Node registered again has a new uid: the Lease follows it, or the garbage
            // collector would delete it as the old Node's.
            let owned_by = lease
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| o.uid.as_str());
            if let Some(uid) = node_uid.filter(|uid| owned_by != Some(*uid)) {
                lease.metadata.owner_references = capstan_slim::from_json(
                    &json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]),
                )
                .ok();
            }
            api.replace(node, &PostParams::default(), &lease).await?
        }
        None => {
            let fresh: Lease =
                capstan_slim::from_json(&lease_manifest(node, node_uid, duration_seconds, now))
                    .map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &fresh).await?
        }
    };
    *cached = Some(written);
    Ok(())
}

/// A Lease is renewed this often: a quarter of its duration, as the kubelet.
pub fn renew_interval(lease_duration_seconds: i32) -> Duration {
    Duration::from_millis((lease_duration_seconds.max(1) as u64) * 250)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let first = conditions_json(&Condition::healthy(), None, 1_000_000);
        let later = conditions_json(&Condition::healthy(), Some(&first), 2_000_000);
        assert_eq!(
            later[3]["lastTransitionTime"],
            first[3]["lastTransitionTime"]
        );
        assert_ne!(later[3]["lastHeartbeatTime"], first[3]["lastHeartbeatTime"]);
        let mut want = Condition::healthy();
        want[3] = Condition::ready(Some("container runtime is down"));
        let flipped = conditions_json(&want, Some(&later), 3_000_000);
        assert_eq!(flipped[3]["status"], "False");
        assert_eq!(flipped[3]["lastTransitionTime"], json!(rfc3339(3_000_000)));
        assert!(conditions_differ(&want, Some(&later)));
        assert!(!conditions_differ(&want, Some(&flipped)));
    }
}
