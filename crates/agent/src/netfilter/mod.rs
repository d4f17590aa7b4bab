//! The node's packet rules, in one nftables table per agent instance (`ip capstan-<instance>`):
//! egress masquerade for the podCIDR, `hostPort` DNAT and the Service proxy. The table is
//! rebuilt at start; afterwards each change is one `nft` transaction on the chains it touches.
//! NetworkPolicies have a table of their own (`network_policy`).

pub mod network_policy;
mod nft;
mod ruleset;
pub mod service_proxy;
mod sysctl;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Mutex;

use crate::network::Cidr;

pub use ruleset::{HostPort, Protocol};
pub use service_proxy::run as run_service_proxy;

#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("the nft tool is not installed (Debian package nftables)")]
    NftMissing,
    #[error("nft refused the transaction: {stderr}")]
    Rejected { stderr: String, script: String },
    #[error("reading nft's listing: {0}")]
    Listing(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The table's name for an agent instance.
pub fn table_name(instance: &str) -> String {
    format!("capstan-{instance}")
}

/// Removes an agent instance's table (and with it every rule it holds); nothing happens
/// when there is none.
pub async fn remove_table(instance: &str) -> Result<(), NetfilterError> {
    nft::apply(&ruleset::delete_table(&table_name(instance))).await
}

/// Whether an agent instance's table exists (false too when `nft` cannot be run: then no
/// agent could have made one).
pub async fn table_exists(instance: &str) -> bool {
    matches!(
        nft::list(&["table", ruleset::FAMILY, &table_name(instance)]).await,
        Ok(Some(_))
    )
}

/// The uids of the pods with hostPort rules in an instance's table (from the kernel, not
/// from memory: what tests and diagnostics check).
pub async fn host_port_pods(instance: &str) -> Result<Vec<String>, NetfilterError> {
    let table = table_name(instance);
    let Some(listing) = nft::list(&["chain", ruleset::FAMILY, &table, ruleset::HOSTPORTS]).await?
    else {
        return Ok(Vec::new());
    };
    let mut uids: Vec<String> = listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["comment"].as_str())
        .filter_map(|c| c.strip_prefix("hostport pod "))
        .map(str::to_string)
        .collect();
    uids.dedup();
    Ok(uids)
}

#[derive(Default)]
struct State {
    /// Per pod uid: its address and hostPorts.
    host_ports: BTreeMap<String, (Ipv4Addr, Vec<HostPort>)>,
}

/// The agent's table.
pub struct Netfilter {
    table: String,
    state: Mutex<State>,
}

impl Netfilter {
    /// Sets the sysctls the rules need and creates the table afresh (rules of a previous run
    /// go: pods re-add theirs as their workers sync).
    pub async fn open(
        instance: &str,
        bridge: &str,
        cidr: Cidr,
    ) -> Result<Netfilter, NetfilterError> {
        sysctl::prepare(bridge);
        let table = table_name(instance);
        nft::apply(&ruleset::create_table(&table, bridge, cidr)).await?;
        tracing::info!(%table, %cidr, bridge, "nftables table created");
        Ok(Netfilter {
            table,
            state: Mutex::new(State::default()),
        })
    }

    /// Pod traffic to these podCIDRs (other nodes') is routed with its pod source address,
    /// not masqueraded.
    pub async fn set_pod_cidrs(&self, own: Cidr, others: &[Cidr]) -> Result<(), NetfilterError> {
        nft::apply(&ruleset::pod_cidrs(&self.table, own, others)).await
    }

    /// The pod's hostPort rules become exactly `ports` (none: removed).
    pub async fn set_host_ports(
        &self,
        pod_uid: &str,
        pod_ip: Ipv4Addr,
        mut ports: Vec<HostPort>,
    ) -> Result<(), NetfilterError> {
        ports.sort();
        ports.dedup();
        let mut state = self.state.lock().await;
        let current = state.host_ports.get(pod_uid);
        if ports.is_empty() && current.is_none()
            || current.is_some_and(|(ip, p)| *ip == pod_ip && *p == ports)
        {
            return Ok(());
        }
        let mut next = state.host_ports.clone();
        if ports.is_empty() {
            next.remove(pod_uid);
        } else {
            next.insert(pod_uid.to_string(), (pod_ip, ports));
        }
        let script = ruleset::host_ports(
            &self.table,
            next.iter()
                .map(|(uid, (ip, p))| (uid.as_str(), *ip, p.as_slice())),
        );
        nft::apply(&script).await?;
        tracing::info!(table = %self.table, pod_uid, pods = next.len(), "hostPort rules updated");
        state.host_ports = next;
        Ok(())
    }

    /// Removes the pod's hostPort rules, if it has any.
    pub async fn remove_host_ports(&self, pod_uid: &str) -> Result<(), NetfilterError> {
        self.set_host_ports(pod_uid, Ipv4Addr::UNSPECIFIED, Vec::new())
            .await
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies a Service proxy transaction (the proxy keeps its own account of what the
    /// table holds; hostPort changes are serialised with it through the state lock).
    pub async fn apply_services(&self, script: &str) -> Result<(), NetfilterError> {
        let _state = self.state.lock().await;
        nft::apply(script).await
    }
}

/// The hostPorts a pod asks for (containers and init containers, as the kubelet hands the
/// CNI plugin), skipping those that cannot be expressed (a non-IPv4 hostIP, port 0).
pub fn host_ports_of(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            let container_port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
            let host_ip = match p.host_ip.as_deref() {
                None | Some("") => None,
                Some(text) => match text.parse::<Ipv4Addr>() {
                    Ok(ip) if ip.is_unspecified() => None,
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        tracing::warn!(
                            host_ip = text,
                            host_port,
                            "hostIP is not IPv4: the hostPort is skipped"
                        );
                        return None;
                    }
                },
            };
            Some(HostPort {
                protocol: Protocol::from_api(p.protocol.as_deref())?,
                host_ip,
                host_port,
                container_port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_from_the_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 81, "hostPort": 8081, "hostIP": "0.0.0.0"},
                {"containerPort": 82},
                {"containerPort": 83, "hostPort": 8083, "hostIP": "::1"}
            ]}]}
        }))
        .expect("pod");
        let ports = host_ports_of(&pod);
        assert_eq!(
            ports,
            vec![
                HostPort {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80
                },
                HostPort {
                    protocol: Protocol::Udp,
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    container_port: 53
                },
                HostPort {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 8081,
                    container_port: 81
                },
            ]
        );
    }
}
