//! The text of the nftables transactions the agent runs on its table: the whole table at
//! start, then one chain (`hostports` or `services`) flushed and refilled in one transaction.
//! Every value is typed (addresses, ports, a protocol enum), so nothing user-written reaches
//! the script but the pod uid and Service names in comments, which are checked.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::network::Cidr;

/// The family of the agent's table: the pod network is IPv4.
pub const FAMILY: &str = "ip";
/// DNAT rules for `hostPort`s, reached for packets to the node's own addresses.
pub const HOSTPORTS: &str = "hostports";
/// Dispatch of packets to ClusterIPs (this node's pods and the node itself).
pub const SERVICES: &str = "services";
/// Dispatch of packets to NodePorts and external addresses (from anywhere).
pub const EXTERNAL: &str = "external";
/// Marks a packet to be masqueraded on its way out (hairpin, NodePort).
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Rejects a connection (a Service without endpoints).
pub const REJECT: &str = "reject-chain";
/// Every node's podCIDR (this one's from the start, the others' as the route loop learns
/// them): pod traffic to another node's pods keeps its source address.
pub const POD_CIDRS: &str = "pod-cidrs";
/// The packet mark bit asking for masquerade (kube-proxy's).
const MASQUERADE_MARK: &str = "0x4000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's protocol name (`TCP` when unset), or None for one nftables cannot match.
    pub fn from_api(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One `hostPort` of a pod: packets to `host_ip` (any node address when None) on
/// `host_port` go to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// The table as the agent creates it at start: an existing one (a previous run's) is
/// deleted in the same transaction, so the node never sees a half-built table. ClusterIP
/// dispatch sees packets from this agent's bridge and the node's own: every cluster has the
/// same first ClusterIP, and two agents on one host (tests) must not catch each other's.
/// Per-Service chains hang off the verdict maps, so a packet costs one lookup however many
/// Services there are; Services without endpoints are rejected in the filter hooks (the
/// ClusterIP is not an address anyone answers for, so an unhandled packet would time out).
pub fn create_table(table: &str, bridge: &str, cidr: Cidr) -> String {
    let addr_map = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let port_map = "type inet_proto . inet_service : verdict;";
    format!(
        "add table {FAMILY} {table}
delete table {FAMILY} {table}
table {FAMILY} {table} {{
  map service-ips {{ {addr_map} }}
  map external-ips {{ {addr_map} }}
  map service-nodeports {{ {port_map} }}
  map no-endpoint-services {{ {addr_map} }}
  map no-endpoint-nodeports {{ {port_map} }}
  set {POD_CIDRS} {{ type ipv4_addr; flags interval; elements = {{ {cidr} }} }}
  chain {MARK_FOR_MASQUERADE} {{
    meta mark set meta mark | {MASQUERADE_MARK}
  }}
  chain {REJECT} {{
    reject
  }}
  chain {SERVICES} {{
    ip daddr . meta l4proto . th dport vmap @service-ips
  }}
  chain {EXTERNAL} {{
    ip daddr . meta l4proto . th dport vmap @external-ips
    fib daddr type local meta l4proto . th dport vmap @service-nodeports
  }}
  chain {HOSTPORTS} {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{bridge}\" jump {SERVICES}
    jump {EXTERNAL}
    fib daddr type local jump {HOSTPORTS}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    jump {SERVICES}
    jump {EXTERNAL}
    fib daddr type local jump {HOSTPORTS}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & {MASQUERADE_MARK} == {MASQUERADE_MARK} masquerade fully-random
    ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade fully-random
    ip saddr {cidr} ip daddr != @{POD_CIDRS} oifname != \"{bridge}\" masquerade fully-random
  }}
  chain endpoints-check {{
    ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports
  }}
  chain filter-forward {{
    type filter hook forward priority filter - 10; policy accept;
    ct state new jump endpoints-check
  }}
  chain filter-input {{
    type filter hook input priority filter - 10; policy accept;
    ct state new jump endpoints-check
  }}
  chain filter-output {{
    type filter hook output priority filter - 10; policy accept;
    ct state new jump endpoints-check
  }}
}}
"
    )
}

/// The `pod-cidrs` set becomes exactly `own` and `others`.
pub fn pod_cidrs(table: &str, own: Cidr, others: &[Cidr]) -> String {
    let mut script = format!("flush set {FAMILY} {table} {POD_CIDRS}\n");
    let mut elements = vec![own.to_string()];
    elements.extend(others.iter().filter(|c| **c != own).map(Cidr::to_string));
    let _ = writeln!(
        script,
        "add element {FAMILY} {table} {POD_CIDRS} {{ {} }}",
        elements.join(", ")
    );
    script
}

/// Deletes the table if it exists (`add` first makes the `delete` never fail).
pub fn delete_table(table: &str) -> String {
    format!("add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n")
}

/// The `hostports` chain holding exactly these pods' rules.
pub fn host_ports<'a>(
    table: &str,
    pods: impl IntoIterator<Item = (&'a str, Ipv4Addr, &'a [HostPort])>,
) -> String {
    let mut s = format!("flush chain {FAMILY} {table} {HOSTPORTS}\n");
    for (uid, pod_ip, ports) in pods {
        for p in ports {
            let _ = write!(s, "add rule {FAMILY} {table} {HOSTPORTS} ");
            if let Some(ip) = p.host_ip {
                let _ = write!(s, "ip daddr {ip} ");
            }
            let _ = writeln!(
                s,
                "{} dport {} dnat to {pod_ip}:{} comment \"{}\"",
                p.protocol.keyword(),
                p.host_port,
                p.container_port,
                host_port_comment(uid)
            );
        }
    }
    s
}

/// The comment naming a pod's hostPort rules (how a listing finds them).
pub fn host_port_comment(uid: &str) -> String {
    format!("hostport pod {}", safe_comment(uid))
}

/// Comments hold names and uids: anything else (quotes, newlines) is dropped, and the
/// length kept under nftables' 128-byte limit.
pub(crate) fn safe_comment(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '/' | ':' | '_'))
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_rules_match_the_host_ip_only_when_given() {
        let ports = [
            HostPort {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                container_port: 80,
            },
            HostPort {
                protocol: Protocol::Udp,
                host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
                host_port: 5353,
                container_port: 53,
            },
        ];
        let s = host_ports("t", [("u-1", Ipv4Addr::new(10, 0, 0, 2), &ports[..])]);
        assert_eq!(
            s,
            "flush chain ip t hostports\n\
             add rule ip t hostports tcp dport 8080 dnat to 10.0.0.2:80 comment \"hostport pod u-1\"\n\
             add rule ip t hostports ip daddr 127.0.0.1 udp dport 5353 dnat to 10.0.0.2:53 comment \"hostport pod u-1\"\n"
        );
    }
}
