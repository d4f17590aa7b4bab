//! The agent's Node: registration with what the host really has (capacity, nodeInfo,
//! addresses), the Lease renewed every quarter of its duration, conditions computed from the
//! host (Ready, MemoryPressure, DiskPressure, PIDPressure), `status.images`, and the kubelet
//! HTTPS endpoint the API server reaches for `pods/log`.

use std::sync::Arc;

use crate::agent::AgentOptions;
use crate::images::ImageStore;

/// Certificates for the kubelet endpoint, handed over by an in-process server (a stand-alone
/// agent is given files).
#[derive(Debug, Clone)]
pub struct KubeletTls {
    /// The cluster CA: the agent's serving certificate is issued from it, and the API
    /// server's client certificate is checked against it.
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
}

/// What the pod workers need from the node part.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub name: String,
    /// The node's InternalIP (`status.hostIP` of its pods).
    pub host_ip: String,
    /// The kubelet endpoint's port.
    pub kubelet_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {name}: {reason}")]
    Register { name: String, reason: String },
    #[error("kubelet endpoint: {0}")]
    Endpoint(String),
}

/// Registers the Node, starts its Lease, status and endpoint tasks; returns once registered.
pub async fn start(
    client: kube::Client,
    opts: &AgentOptions,
    images: Arc<ImageStore>,
) -> Result<NodeHandle, NodeError> {
    let _ = (client, opts, images);
    unimplemented!("node helper")
}
