//! What a simulated node writes, shaped as the kubelet writes it: the Node at registration
//! (labels, taints, capacity, podCIDR, addresses, nodeInfo), its conditions and its Lease.

use serde_json::{json, Value};

use super::clock::{rfc3339, rfc3339_micro, Millis};
use super::fleet::{lock, SimNode};

/// The kubelet version simulated nodes report: the API server's own minor version.
pub const KUBELET_VERSION: &str = "v1.33.0";
pub const RUNTIME_VERSION: &str = concat!("capstan-sim://", env!("CARGO_PKG_VERSION"));
/// Marks a Node as simulated (informational; ownership is by name).
pub const ANNOTATION_SIMULATED: &str = "sim.capstan.io/simulated";

pub fn node_manifest(node: &SimNode, now: Millis) -> Value {
    let g = &node.group;
    let mut labels = serde_json::Map::new();
    labels.insert("beta.kubernetes.io/arch".into(), json!(g.arch));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(g.arch));
    labels.insert("kubernetes.io/hostname".into(), json!(node.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    if let Some(t) = &g.instance_type {
        labels.insert("node.kubernetes.io/instance-type".into(), json!(t));
        labels.insert("beta.kubernetes.io/instance-type".into(), json!(t));
    }
    for (k, v) in &g.labels {
        labels.insert(k.clone(), json!(v));
    }
    let taints: Vec<Value> = g
        .taints
        .iter()
        .map(|t| {
            let mut o = json!({"key": t.key, "effect": t.effect});
            if let Some(v) = &t.value {
                o["value"] = json!(v);
            }
            o
        })
        .collect();
    let cidr = lock(&node.pod_cidr).clone();
    let mut spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    let resources = json!({
        "cpu": g.cpu,
        "memory": g.memory,
        "pods": g.pods.to_string(),
        "ephemeral-storage": g.ephemeral_storage,
    });
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                ANNOTATION_SIMULATED: "true",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions(None, now),
            "addresses": [
                {"type": "InternalIP", "address": node.internal_ip.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": fake_id(&node.name, "machine"),
                "systemUUID": fake_uuid(&node.name),
                "bootID": fake_uuid(&format!("{}-boot", node.name)),
                "kernelVersion": "6.1.0-capstan-sim",
                "osImage": "capstan simulated node",
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": g.arch,
            },
        },
    })
}

/// The four kubelet conditions, healthy, in the kubelet's order and words. A condition whose
/// status is unchanged keeps its lastTransitionTime from `previous` (the stored conditions).
pub fn conditions(previous: Option<&Value>, now: Millis) -> Value {
    let want = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    let stamp = rfc3339(now);
    Value::Array(
        want.iter()
            .map(|(ty, status, reason, message)| {
                let old = previous
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|c| c["type"] == *ty));
                let transition = match old {
                    Some(c) if c["status"] == *status => c["lastTransitionTime"].clone(),
                    _ => json!(stamp),
                };
                json!({
                    "type": ty,
                    "status": status,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": transition,
                    "reason": reason,
                    "message": message,
                })
            })
            .collect(),
    )
}

/// The node's Lease in `kube-node-lease`, owned by the Node as the kubelet makes it.
pub fn lease_manifest(
    node: &SimNode,
    uid: Option<&str>,
    duration_seconds: i32,
    now: Millis,
) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node.name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": node.name,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": rfc3339_micro(now),
        },
    });
    if let Some(uid) = uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": uid}]);
    }
    lease
}

/// A stable hex string derived from a name (no real machine behind it).
pub fn fake_id(name: &str, salt: &str) -> String {
    (0..2u64)
        .map(|i| format!("{:016x}", fnv(&format!("{salt}/{i}/{name}"))))
        .collect()
}

fn fake_uuid(name: &str) -> String {
    let h = fake_id(name, "uuid");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
