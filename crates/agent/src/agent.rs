//! `run`: the real node agent's top level — open the image store and the runtime, register
//! the Node, then run the Lease, status and pod loops until the future is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::images::{ImageStore, ImagesError};
use crate::node::NodeError;
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};

/// What `capstan server` (in-process) or `capstan agent` (stand-alone) runs the agent with.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The Node's name (default: the host name, lower-cased).
    pub node_name: String,
    /// Where images, container state and pod volumes live (`<data-dir>/agent`).
    pub root: PathBuf,
    /// Archives in this folder are imported at start (as k3s's air-gap images folder).
    pub images_dir: Option<PathBuf>,
    /// The Lease's duration (kubelet: 40 s); renewed every quarter of it.
    pub lease_duration_seconds: i32,
    /// Node status is posted this often even when nothing changed (kubelet: 5 min).
    pub status_report_interval: Duration,
    /// Max pods (the Node's `pods` capacity, kubelet: 110).
    pub max_pods: u32,
    /// The kubelet HTTPS endpoint (logs, later exec): address to listen on; port 0 picks
    /// one, which the Node's `status.daemonEndpoints.kubeletEndpoint.port` reports.
    pub kubelet_listen: std::net::SocketAddr,
    /// The cluster CA (PEM) the API server's client certificate is checked against, and the
    /// CA certificate + key the agent's serving certificate is issued from (in-process).
    pub kubelet_tls: Option<crate::node::KubeletTls>,
    /// A short name distinguishing this agent's host resources (cgroup parent, runtime
    /// state dir) from another agent's on the same machine: tests run several servers.
    pub instance: String,
    /// Container log rotation: bytes per file and files kept (kubelet: 10Mi, 5).
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    /// The node's pod network (its `spec.podCIDR`); pods get addresses from it. None: the
    /// one the cluster's node-ipam loop gives the Node.
    pub pod_cidr: Option<String>,
}

impl AgentOptions {
    pub fn new(node_name: String, root: PathBuf, instance: String) -> AgentOptions {
        AgentOptions {
            node_name,
            root,
            images_dir: None,
            lease_duration_seconds: 40,
            status_report_interval: Duration::from_secs(300),
            max_pods: 110,
            kubelet_listen: "127.0.0.1:0".parse().expect("literal address"),
            kubelet_tls: None,
            instance,
            container_log_max_size: 10 * 1024 * 1024,
            container_log_max_files: 5,
            pod_cidr: Some("10.42.0.0/24".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("image store: {0}")]
    Images(#[from] ImagesError),
    #[error("container runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("cluster DNS: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("packet rules: {0}")]
    Netfilter(#[from] crate::netfilter::NetfilterError),
}

/// Runs the agent until the returned future is dropped (containers keep running: a restarted
/// agent finds them again).
pub async fn run(client: kube::Client, opts: AgentOptions) -> Result<(), AgentError> {
    let images = Arc::new(ImageStore::open(&opts.root.join("image-store"))?);
    let runtime = Arc::new(Runtime::open(RuntimeConfig::for_agent(&opts))?);
    // The Node registers first (the kubelet does within seconds of starting); importing
    // air-gap archives can take minutes and pods wait for it below.
    let node = crate::node::start(client.clone(), &opts, images.clone(), runtime.clone()).await?;
    if let Some(dir) = &opts.images_dir {
        images.import_dir(dir).await?;
    }
    let cidr =
        crate::network::pod_cidr::resolve(&client, &node.name, opts.pod_cidr.as_deref()).await?;
    // The bridge is named for this agent's instance: two agents on one machine (tests) keep
    // theirs apart.
    let bridge = bridge_name(&opts.instance);
    let network = match crate::network::PodNetwork::open(&bridge, cidr, &ips_dir(&opts.root)).await
    {
        Ok(n) => Some(Arc::new(n)),
        Err(e) => {
            tracing::error!(error = %e, "no pod network: pods get no address of their own");
            None
        }
    };
    let services = crate::services::ServiceCache::start(client.clone());
    if network.is_some() {
        if let Err(e) = crate::dns::start(
            client.clone(),
            node.name.clone(),
            cidr.gateway(),
            services.clone(),
        )
        .await
        {
            tracing::error!(error = %e, "no cluster DNS on this node: pods' names do not resolve");
        }
    }
    let netfilter = match crate::netfilter::Netfilter::open(&opts.instance, &bridge, cidr).await {
        Ok(n) => {
            let n = Arc::new(n);
            tokio::spawn(crate::netfilter::run_service_proxy(
                client.clone(),
                node.name.clone(),
                n.clone(),
            ));
            tokio::spawn(crate::netfilter::network_policy::run(
                client.clone(),
                node.name.clone(),
                opts.instance.clone(),
            ));
            Some(n)
        }
        Err(e) => {
            tracing::error!(error = %e, "no packet rules: pods cannot reach beyond the node, hostPorts and Services do not work");
            None
        }
    };
    // Other nodes' pods: routes to their podCIDRs, and no masquerade on the way there.
    tokio::spawn(crate::network::node_routes::run(
        client.clone(),
        node.name.clone(),
        cidr,
        netfilter.clone(),
        routes_record(&opts.root),
    ));
    let networking = crate::pods::Networking {
        network,
        netfilter,
        services,
    };
    // The node's disk backs the local-path volumes scheduled here (joined, not spawned:
    // dropping the agent stops it too).
    let storage = crate::storage::run(client.clone(), node.name.clone(), opts.root.join("storage"));
    let pods = crate::pods::run(client, opts, node, images, runtime, networking);
    tokio::join!(storage, pods);
    Ok(())
}

/// The node's pod bridge: one per agent instance, so test servers on one machine never share.
fn bridge_name(instance: &str) -> String {
    format!("cap{}", instance.chars().take(8).collect::<String>())
}

fn ips_dir(root: &std::path::Path) -> PathBuf {
    root.join("network").join("ips")
}

fn routes_record(root: &std::path::Path) -> PathBuf {
    root.join("network").join("routes")
}

/// `capstan cleanup`: stops every container of this agent instance and removes what it holds
/// on the host — sandboxes, mounts, cgroups, the pod bridge and veths, its nftables table, the
/// runtime state —
/// as k3s-killall.sh does. Pods' API objects are untouched: a restarted agent makes their
/// containers again. Returns what it removed.
pub async fn cleanup(opts: &AgentOptions) -> Result<Vec<String>, AgentError> {
    let config = crate::runtime::RuntimeConfig::for_agent(opts);
    // Opening the runtime makes its state dir: only one that was there counts as removed.
    let had_state = config.state_root.exists();
    // Every step runs even when an earlier one failed (a container slow to die keeps its
    // cgroup busy, say): the bridge and the tables go regardless, and the first error is
    // returned after.
    let mut first_error: Option<AgentError> = None;
    let mut removed = Vec::new();
    match Runtime::open(config) {
        Ok(runtime) => match runtime.remove_everything().await {
            Ok(mut r) => {
                if !had_state {
                    r.retain(|r| !r.starts_with("dir "));
                }
                removed.extend(r);
            }
            Err(e) => first_error = Some(e.into()),
        },
        Err(e) => first_error = Some(e.into()),
    }
    removed.extend(crate::network::node_routes::remove_recorded(&routes_record(&opts.root)).await);
    match crate::network::remove_bridge(&bridge_name(&opts.instance), &ips_dir(&opts.root)).await {
        Ok(links) => removed.extend(links.into_iter().map(|l| format!("link {l}"))),
        Err(e) => {
            first_error.get_or_insert(e.into());
        }
    }
    if crate::netfilter::table_exists(&opts.instance).await {
        match crate::netfilter::remove_table(&opts.instance).await {
            Ok(()) => removed.push(format!(
                "nftables table {}",
                crate::netfilter::table_name(&opts.instance)
            )),
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    if crate::netfilter::network_policy::table_exists(&opts.instance).await {
        match crate::netfilter::network_policy::remove_table(&opts.instance).await {
            Ok(()) => removed.push(format!(
                "nftables table {}",
                crate::netfilter::network_policy::table_name(&opts.instance)
            )),
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    match first_error {
        Some(e) => {
            for what in &removed {
                tracing::info!("removed {what}");
            }
            Err(e)
        }
        None => Ok(removed),
    }
}
