//! The node simulator: N Nodes that register, heartbeat (Lease + status) and play the kubelet
//! for the pods bound to them, all over one kube client — cheap enough for 1,000 nodes.
//!
//! Pods declare how they end with annotations: `sim.capstan.io/exit-after: 5s` (the containers
//! exit that long after they start) and `sim.capstan.io/exit-code: "1"` (default 0); what
//! follows honours `restartPolicy`. A node stops (no heartbeats, no pod updates) while it has
//! the annotation `sim.capstan.io/stopped: "true"` and resumes when it is removed.

mod cidr;
mod fleet;
mod groups;
mod heartbeat;
mod node_object;
mod node_watch;
mod pod_state;
mod pod_status;
mod pod_view;
mod pod_watch;
mod pod_worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

pub use cidr::CidrError;
pub use groups::{GroupParseError, NodeGroup, SYNTAX as NODE_GROUP_SYNTAX};

use fleet::{Fleet, SimNode};

pub const ANNOTATION_EXIT_AFTER: &str = "sim.capstan.io/exit-after";
pub const ANNOTATION_EXIT_CODE: &str = "sim.capstan.io/exit-code";
pub const ANNOTATION_STOPPED: &str = "sim.capstan.io/stopped";

pub const DEFAULT_PREFIX: &str = "sim-node";
/// 32,768 /24 blocks, clear of the default Service range (10.96.0.0/12).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.128.0.0/9";

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Node names: `PREFIX-i` for the default group, `PREFIX-GROUP-i` for a named one.
    pub prefix: String,
    pub groups: Vec<NodeGroup>,
    pub cluster_cidr: String,
    /// Each node's podCIDR size (upstream's `--node-cidr-mask-size`, 24).
    pub node_cidr_mask: u8,
    /// The Lease's duration (kubelet: 40 s); it is renewed every quarter of it.
    pub lease_duration_seconds: i32,
    /// Status is posted this often even when nothing changed (kubelet: 5 min).
    pub status_report_interval: Duration,
    /// API writes in flight at once, over all nodes and pods.
    pub max_concurrent_writes: usize,
}

impl SimConfig {
    /// `count` default-shaped nodes plus the given groups.
    pub fn new(count: usize, groups: Vec<NodeGroup>) -> SimConfig {
        let mut all = Vec::new();
        if count > 0 {
            all.push(NodeGroup::default_shape("", count));
        }
        all.extend(groups);
        SimConfig {
            prefix: DEFAULT_PREFIX.into(),
            groups: all,
            cluster_cidr: DEFAULT_CLUSTER_CIDR.into(),
            node_cidr_mask: 24,
            lease_duration_seconds: 40,
            status_report_interval: Duration::from_secs(300),
            max_concurrent_writes: 64,
        }
    }

    pub fn node_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    pub fn lease_renew_interval(&self) -> Duration {
        crate::node_heartbeat::renew_interval(self.lease_duration_seconds)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("two simulated nodes would be named {0:?}: choose other group names")]
    DuplicateName(String),
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// The nodes a configuration describes, with their podCIDRs.
fn plan(config: &SimConfig) -> Result<Vec<Arc<SimNode>>, SimError> {
    let total = config.node_count();
    let cidr = cidr::ClusterCidr::new(&config.cluster_cidr, config.node_cidr_mask, total)?;
    let mut out = Vec::with_capacity(total);
    let mut seen = std::collections::HashSet::new();
    for g in &config.groups {
        let group = Arc::new(g.clone());
        for i in 0..g.count {
            let name = if g.name.is_empty() {
                format!("{}-{i}", config.prefix)
            } else {
                format!("{}-{}-{i}", config.prefix, g.name)
            };
            if !seen.insert(name.clone()) {
                return Err(SimError::DuplicateName(name));
            }
            let index = out.len();
            let block = cidr
                .node_block(index)
                .ok_or_else(|| SimError::DuplicateName(name.clone()))?;
            out.push(Arc::new(SimNode::new(name, index, group.clone(), block)));
        }
    }
    Ok(out)
}

/// Register the nodes, then heartbeat and run their pods until the task is dropped.
/// Returns early only if a node cannot be registered at all (a final API answer).
pub async fn run(client: kube::Client, config: SimConfig) -> Result<(), SimError> {
    let ordered = plan(&config)?;
    let started = Instant::now();
    let writer = crate::api_retry::Writer::new(config.max_concurrent_writes);
    let fleet = Arc::new(Fleet::new(client, config, writer, ordered));
    let concurrency = fleet.config.max_concurrent_writes.max(1);
    let mut registered = futures::stream::iter(fleet.ordered.clone())
        .map(|n| {
            let fleet = fleet.clone();
            async move {
                heartbeat::register(&fleet, &n)
                    .await
                    .map_err(|source| SimError::Register {
                        node: n.name.clone(),
                        source,
                    })
            }
        })
        .buffer_unordered(concurrency);
    while let Some(r) = registered.next().await {
        r?;
    }
    drop(registered);
    tracing::info!(
        nodes = fleet.ordered.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "simulated nodes registered"
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(node_watch::run(fleet.clone()));
    tasks.spawn(pod_watch::run(fleet.clone()));
    for n in &fleet.ordered {
        tasks.spawn(heartbeat::run(fleet.clone(), n.clone()));
    }
    // The loops end only when their runtime does; dropping this future aborts them all.
    while tasks.join_next().await.is_some() {}
    Ok(())
}
