//! What a simulated node writes, shaped as the kubelet writes it: the Node at registration
//! (labels, taints, capacity, podCIDR, addresses, nodeInfo); conditions and the Lease are
//! shaped by `node_heartbeat`, shared with the real node.

use serde_json::{json, Value};

use super::fleet::{lock, SimNode};
use crate::clock::Millis;
use crate::node_heartbeat::{conditions_json, standard_labels, Condition, KUBELET_VERSION};

pub const RUNTIME_VERSION: &str = concat!("capstan-sim://", env!("CARGO_PKG_VERSION"));
/// Marks a Node as simulated (informational; ownership is by name).
pub const ANNOTATION_SIMULATED: &str = "sim.capstan.io/simulated";

pub fn node_manifest(node: &SimNode, now: Millis) -> Value {
    let g = &node.group;
    let mut labels = standard_labels(&node.name, &g.arch);
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
            "conditions": conditions_json(&Condition::healthy(), None, now),
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
