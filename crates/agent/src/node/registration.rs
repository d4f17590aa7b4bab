//! The Node object this agent owns: created at start, or adopted as the kubelet adopts one
//! (its own labels reset, users' labels, taints and spec kept), and its status as posted.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use super::host::HostFacts;
use crate::clock::Millis;
use crate::node_heartbeat::{conditions_json, standard_labels, Condition, KUBELET_VERSION};

pub const RUNTIME_VERSION: &str = concat!("capstan://", env!("CARGO_PKG_VERSION"));

/// What the Node says about this agent, beyond the host facts.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub max_pods: u32,
    pub kubelet_port: u16,
    /// The `--pod-cidr` given: the Node is born with it, so the node-ipam loop never hands
    /// it another block first.
    pub pod_cidr: Option<String>,
}

fn labels(id: &NodeIdentity, facts: &HostFacts) -> serde_json::Map<String, Value> {
    standard_labels(&id.name, facts.architecture)
}

/// `status` without conditions and images: what does not change while the agent runs.
pub fn static_status(id: &NodeIdentity, facts: &HostFacts) -> Value {
    let capacity = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_total_kib),
        "ephemeral-storage": facts.ephemeral_storage_bytes.to_string(),
        "pods": id.max_pods.to_string(),
        "hugepages-2Mi": "0",
    });
    let mut allocatable = capacity.clone();
    allocatable["memory"] = json!(format!("{}Ki", facts.allocatable_memory_kib()));
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": facts.internal_ip.to_string()},
            {"type": "Hostname", "address": id.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": id.kubelet_port}},
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.system_uuid,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": facts.architecture,
        },
    })
}

/// Create the Node, or adopt the existing one; returns what the API stored.
pub async fn register(
    client: &kube::Client,
    id: &NodeIdentity,
    facts: &HostFacts,
    initial: &[Condition],
    now: Millis,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut status = static_status(id, facts);
    status["conditions"] = conditions_json(initial, None, now);
    let manifest: Node = capstan_slim::from_json(&json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": id.name,
            "labels": labels(id, facts),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": match &id.pod_cidr {
            Some(c) => json!({"podCIDR": c, "podCIDRs": [c]}),
            None => json!({}),
        },
        "status": status,
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &manifest).await {
        Ok(n) => {
            tracing::info!(node = %id.name, "registered the node");
            Ok(n)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => adopt(&api, id, facts).await,
        Err(e) => Err(e),
    }
}

/// The kubelet's own labels are set to what this host says; everything users set stays.
async fn adopt(api: &Api<Node>, id: &NodeIdentity, facts: &HostFacts) -> Result<Node, kube::Error> {
    let existing = api.get(&id.name).await?;
    let stored = existing.metadata.labels.clone().unwrap_or_default();
    let ours = labels(id, facts);
    let stale = ours
        .iter()
        .any(|(k, v)| stored.get(k).map(String::as_str) != v.as_str());
    let node = if stale {
        let body = json!({"metadata": {"labels": ours}});
        api.patch(&id.name, &PatchParams::default(), &Patch::Merge(body))
            .await?
    } else {
        existing
    };
    tracing::info!(node = %id.name, relabelled = stale, "adopted the existing node");
    Ok(node)
}

/// Post the whole status (strategic merge: others' conditions and addresses stay).
pub async fn post_status(
    client: &kube::Client,
    name: &str,
    status: Value,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": status })),
    )
    .await
}
