//! The agent's Node: registration with what the host really has (capacity, nodeInfo,
//! addresses), the Lease renewed every quarter of its duration, conditions computed from the
//! host (Ready, MemoryPressure, DiskPressure, PIDPressure), `status.images`, and the kubelet
//! endpoint the API server reaches for logs, exec and port-forward: a TLS listener, or (with
//! no serving certificate) tunnel connections the agent opens to the server.

mod container_logs;
mod host;

pub use host::meminfo_kib;
mod images_status;
mod kubelet_server;
mod kubelet_tls;
mod lease_loop;
mod pressure;
mod registration;
mod status_loop;
mod tunnel_client;

use std::sync::Arc;

use tokio::sync::watch;

use crate::api_retry::Writer;
use crate::clock::now_ms;

pub use host::HostFacts;
pub use registration::RUNTIME_VERSION;
pub use status_loop::STATUS_PERIOD;

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
    /// Why the container runtime cannot run pods, None while it can: the Node is Ready
    /// only while this is None. Whoever watches the runtime reports through it.
    pub runtime_problem: Arc<watch::Sender<Option<String>>>,
}

impl NodeHandle {
    /// Report the runtime's health; a change is posted in the Node's Ready condition at once.
    pub fn report_runtime(&self, problem: Option<String>) {
        self.runtime_problem.send_if_modified(|p| {
            let changed = *p != problem;
            *p = problem;
            changed
        });
    }
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
    runtime: Arc<crate::runtime::Runtime>,
) -> Result<NodeHandle, NodeError> {
    let facts = HostFacts::read(&opts.root);
    let (listener, kubelet_port) = bind_endpoint(opts).await?;
    let id = registration::NodeIdentity {
        name: opts.node_name.clone(),
        max_pods: opts.max_pods,
        kubelet_port,
        pod_cidr: opts.pod_cidr.clone(),
    };
    let (problem_tx, problem_rx) = watch::channel(runtime_problem(opts));
    let initial = pressure::Pressure::read(&opts.root).conditions(problem_tx.borrow().as_deref());
    // Registration waits out an API server that is still starting (or briefly failing).
    let stored = Writer::new(1)
        .write("register node", || {
            registration::register(&client, &id, &facts, &initial, now_ms())
        })
        .await
        .map_err(|e| NodeError::Register {
            name: id.name.clone(),
            reason: e.to_string(),
        })?;
    let node_uid = Arc::new(watch::Sender::new(stored.metadata.uid.clone()));
    tokio::spawn(lease_loop::run(
        client.clone(),
        id.name.clone(),
        node_uid.clone(),
        opts.lease_duration_seconds,
    ));
    let status = status_loop::StatusLoop {
        client: client.clone(),
        id: id.clone(),
        facts: facts.clone(),
        agent_root: opts.root.clone(),
        report_interval: opts.status_report_interval,
        images,
        runtime_problem: problem_rx,
        node_uid,
    };
    tokio::spawn(status.run(stored));
    let streams = Arc::new(crate::streaming::endpoints::StreamingState {
        client: client.clone(),
        runtime,
    });
    let state = Arc::new(container_logs::LogsState {
        client: client.clone(),
        pods_root: opts.root.join("pods"),
    });
    let app = kubelet_server::router(state, Some(streams));
    match (listener, &opts.kubelet_tls) {
        (Some(listener), Some(tls)) => {
            let config = kubelet_tls::server_config(tls, &id.name, &[facts.internal_ip])
                .map_err(|e| NodeError::Endpoint(e.to_string()))?;
            tokio::spawn(kubelet_server::serve(listener, config, app));
        }
        // No serving certificate: the API server reaches this node over connections the
        // agent opens to it (behind NAT or a firewall too).
        _ => tunnel_client::start(client, id.name.clone(), app),
    }
    tracing::info!(node = %id.name, internal_ip = %facts.internal_ip, kubelet_port, "node registered");
    Ok(NodeHandle {
        name: id.name,
        host_ip: facts.internal_ip.to_string(),
        kubelet_port,
        runtime_problem: Arc::new(problem_tx),
    })
}

/// The kubelet endpoint's socket, bound before registering so the Node names its real port.
/// Without certificates (a stand-alone agent given none) there is no listener: port 0, and
/// the agent is reached through its tunnel.
async fn bind_endpoint(
    opts: &AgentOptions,
) -> Result<(Option<tokio::net::TcpListener>, u16), NodeError> {
    if opts.kubelet_tls.is_none() {
        tracing::info!(
            "no kubelet serving certificate: the API server reaches this node through the agent's tunnel"
        );
        return Ok((None, 0));
    }
    let listener = tokio::net::TcpListener::bind(opts.kubelet_listen)
        .await
        .map_err(|e| NodeError::Endpoint(format!("binding {}: {e}", opts.kubelet_listen)))?;
    let port = listener
        .local_addr()
        .map_err(|e| NodeError::Endpoint(e.to_string()))?
        .port();
    Ok((Some(listener), port))
}

/// What keeps containers from running on this host at all, checked once at start: the
/// runtime's cgroup hierarchy and the agent's own root.
fn runtime_problem(opts: &AgentOptions) -> Option<String> {
    if let Err(e) = std::fs::create_dir_all(&opts.root) {
        return Some(format!(
            "container runtime is down: cannot create {}: {e}",
            opts.root.display()
        ));
    }
    let cgroup = std::path::Path::new("/sys/fs/cgroup");
    let v2 = cgroup.join("cgroup.controllers").exists();
    let v1 = cgroup.join("memory").is_dir() && cgroup.join("cpu").exists();
    if !(v2 || v1) {
        return Some("container runtime is down: no cgroup hierarchy at /sys/fs/cgroup".into());
    }
    None
}
