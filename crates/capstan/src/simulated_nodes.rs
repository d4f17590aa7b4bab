//! The simulated-node flags shared by `capstan agent --simulate N` and `capstan server
//! --simulated-nodes N`, and the kube client the stand-alone agent builds from a kubeconfig.

use std::time::Duration;

use capstan_agent::simulate::{self, NodeGroup, SimConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct SimFlags {
    /// Simulated node names: PREFIX-i, and PREFIX-GROUP-i for a --node-group.
    #[arg(long, default_value = simulate::DEFAULT_PREFIX)]
    pub node_prefix: String,
    /// Simulated nodes of one shape (repeatable), in addition to the N default ones.
    #[arg(long = "node-group", value_name = "SPEC", value_parser = parse_group, long_help = simulate::NODE_GROUP_SYNTAX)]
    pub node_groups: Vec<NodeGroup>,
    /// Where simulated nodes' podCIDRs come from (node i gets the i-th block; apart from
    /// `--cluster-cidr`, which real nodes' come from).
    #[arg(long, default_value = simulate::DEFAULT_CLUSTER_CIDR)]
    pub simulated_cluster_cidr: String,
    /// Size of each simulated node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub simulated_node_cidr_mask_size: u8,
    /// Lease duration of this node and of simulated nodes (renewed every quarter of it, as
    /// the kubelet).
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: i32,
    /// Simulated nodes post unchanged status this often (the kubelet's nodeStatusReportFrequency).
    #[arg(long, default_value_t = 300)]
    pub node_status_report_seconds: u64,
}

fn parse_group(s: &str) -> Result<NodeGroup, String> {
    NodeGroup::parse(s).map_err(|e| e.to_string())
}

impl SimFlags {
    pub fn config(&self, count: usize) -> anyhow::Result<SimConfig> {
        anyhow::ensure!(
            self.node_lease_duration_seconds >= 1,
            "--node-lease-duration-seconds must be at least 1"
        );
        let mut c = SimConfig::new(count, self.node_groups.clone());
        c.prefix = self.node_prefix.clone();
        c.cluster_cidr = self.simulated_cluster_cidr.clone();
        c.node_cidr_mask = self.simulated_node_cidr_mask_size;
        c.lease_duration_seconds = self.node_lease_duration_seconds;
        c.status_report_interval = Duration::from_secs(self.node_status_report_seconds.max(1));
        Ok(c)
    }

    /// Whether any simulated node is asked for.
    pub fn wanted(&self, count: usize) -> bool {
        count > 0 || self.node_groups.iter().any(|g| g.count > 0)
    }
}
