//! UDP flows a Service change left stale, cleared with the `conntrack` tool as kube-proxy
//! does: a UDP client keeps its 5-tuple, so its packets follow the conntrack entry's old
//! DNAT to an endpoint that is gone until the entry idles out — for ever while it sends.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::process::Command;

use super::model::ProxiedPort;
use crate::netfilter::Protocol;

/// Where a UDP Service port is reached, and the endpoint addresses behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlow {
    pub frontends: Vec<Frontend>,
    pub backends: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    /// The ClusterIP or an external address, with the Service port.
    Address(Ipv4Addr, u16),
    /// The NodePort, on any of the node's addresses.
    NodePort(u16),
}

impl UdpFlow {
    /// The UDP flow of a programmed port; None for TCP and SCTP (their connections end).
    pub fn of(port: &ProxiedPort) -> Option<UdpFlow> {
        if port.key.protocol != Protocol::Udp {
            return None;
        }
        let mut frontends = vec![Frontend::Address(port.cluster_ip, port.port)];
        frontends.extend(
            port.external_ips
                .iter()
                .map(|ip| Frontend::Address(*ip, port.port)),
        );
        frontends.extend(port.node_port.map(Frontend::NodePort));
        let backends = port
            .cluster
            .iter()
            .chain(&port.local)
            .map(|(ip, _)| *ip)
            .collect();
        Some(UdpFlow {
            frontends,
            backends,
        })
    }
}

/// The `conntrack` argument lists that clear what `old` → `new` made stale: entries
/// DNATed to an endpoint that left (kube-proxy's ClearEntriesForNAT / ForPortNAT), and,
/// when a port gains its first endpoint, the entries its refused packets left behind.
pub fn stale(old: Option<&UdpFlow>, new: Option<&UdpFlow>) -> Vec<Vec<String>> {
    let none = UdpFlow {
        frontends: Vec::new(),
        backends: BTreeSet::new(),
    };
    // A new Service counts as one that had no endpoints: packets sent to its address
    // before its rules were in left entries without DNAT.
    let old = old.unwrap_or(&none);
    let kept = new.map(|n| &n.backends);
    let mut out = Vec::new();
    for gone in old
        .backends
        .iter()
        .filter(|ip| !kept.is_some_and(|k| k.contains(ip)))
    {
        for f in &old.frontends {
            let mut args = match f {
                Frontend::Address(ip, port) => filter(Some(*ip), *port),
                Frontend::NodePort(port) => filter(None, *port),
            };
            args.extend(["--dst-nat".to_string(), gone.to_string()]);
            out.push(args);
        }
    }
    if let Some(new) = new.filter(|n| old.backends.is_empty() && !n.backends.is_empty()) {
        for f in &new.frontends {
            if let Frontend::Address(ip, port) = f {
                out.push(filter(Some(*ip), *port));
            }
        }
    }
    out
}

fn filter(dst: Option<Ipv4Addr>, port: u16) -> Vec<String> {
    let mut args = vec!["-D".to_string(), "-p".into(), "udp".into()];
    if let Some(ip) = dst {
        args.extend(["--orig-dst".to_string(), ip.to_string()]);
    }
    args.extend(["--orig-port-dst".to_string(), port.to_string()]);
    args
}

static MISSING_LOGGED: AtomicBool = AtomicBool::new(false);

/// Runs each deletion; none matching is not an error (the tool exits 1 for "0 flow
/// entries have been deleted"). Without the tool, says so once.
pub async fn clear(deletions: Vec<Vec<String>>) {
    for args in deletions {
        let out = Command::new("conntrack")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                tracing::debug!(args = %args.join(" "), "stale UDP flows cleared");
            }
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                if !stderr.contains("0 flow entries") {
                    tracing::warn!(args = %args.join(" "), stderr = %stderr.trim(), "clearing stale UDP flows failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !MISSING_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("the conntrack tool is not installed (Debian package conntrack): UDP clients of a removed endpoint keep reaching it until their flow idles out");
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "running conntrack failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(backends: &[[u8; 4]]) -> UdpFlow {
        UdpFlow {
            frontends: vec![
                Frontend::Address(Ipv4Addr::new(10, 96, 0, 10), 53),
                Frontend::NodePort(30053),
            ],
            backends: backends.iter().map(|b| Ipv4Addr::from(*b)).collect(),
        }
    }

    #[test]
    fn a_removed_endpoint_clears_its_flows_on_every_frontend() {
        let old = flow(&[[10, 42, 0, 5], [10, 42, 0, 6]]);
        let new = flow(&[[10, 42, 0, 6]]);
        let args: Vec<String> = stale(Some(&old), Some(&new))
            .iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(
            args,
            [
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.42.0.5",
                "-D -p udp --orig-port-dst 30053 --dst-nat 10.42.0.5",
            ]
        );
        // A Service that goes takes its endpoints' flows along.
        assert_eq!(stale(Some(&old), None).len(), 4);
        // Nothing removed, nothing cleared.
        assert!(stale(Some(&new), Some(&old)).is_empty());
        assert!(stale(None, Some(&flow(&[]))).is_empty());
    }

    #[test]
    fn a_first_endpoint_clears_what_refused_packets_left() {
        let args: Vec<String> = stale(Some(&flow(&[])), Some(&flow(&[[10, 42, 0, 7]])))
            .iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(args, ["-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53"]);
        assert_eq!(stale(None, Some(&flow(&[[10, 42, 0, 7]]))).len(), 1);
    }
}
