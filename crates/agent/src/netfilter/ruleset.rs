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
/// DNAT rules for Services' ClusterIPs.
pub const SERVICES: &str = "services";

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

    fn keyword(self) -> &'static str {
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

/// One Service port: packets to `cluster_ip:port` go to one of `backends` (none: the rule is
/// left out and the ClusterIP answers nothing, as kube-proxy rejects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port` — the rule's comment.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// The table as the agent creates it at start: an existing one (a previous run's) is
/// deleted in the same transaction, so the node never sees a half-built table. Service
/// rules see packets from this agent's bridge and the node's own: every cluster has the
/// same first ClusterIP, and two agents on one host (tests) must not catch each other's.
pub fn create_table(table: &str, bridge: &str, cidr: Cidr) -> String {
    format!(
        "add table {FAMILY} {table}
delete table {FAMILY} {table}
table {FAMILY} {table} {{
  chain {SERVICES} {{
  }}
  chain {HOSTPORTS} {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{bridge}\" jump {SERVICES}
    fib daddr type local jump {HOSTPORTS}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    jump {SERVICES}
    fib daddr type local jump {HOSTPORTS}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade
    ip saddr {cidr} ip daddr != {cidr} oifname != \"{bridge}\" masquerade
  }}
}}
"
    )
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

/// The `services` chain holding exactly these Service ports' rules.
pub fn services(table: &str, ports: &[ServicePort]) -> String {
    let mut s = format!("flush chain {FAMILY} {table} {SERVICES}\n");
    for p in ports {
        let target = match p.backends.as_slice() {
            [] => continue,
            [(ip, port)] => format!("dnat to {ip}:{port}"),
            many => {
                let elements: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
                    .collect();
                format!(
                    "dnat ip to numgen random mod {} map {{ {} }}",
                    many.len(),
                    elements.join(", ")
                )
            }
        };
        let _ = writeln!(
            s,
            "add rule {FAMILY} {table} {SERVICES} ip daddr {} {} dport {} {target} comment \"{}\"",
            p.cluster_ip,
            p.protocol.keyword(),
            p.port,
            safe_comment(&p.name)
        );
    }
    s
}

/// Comments hold names and uids: anything else (quotes, newlines) is dropped, and the
/// length kept under nftables' 128-byte limit.
fn safe_comment(text: &str) -> String {
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

    #[test]
    fn service_rules_spread_over_backends_and_skip_empty_ones() {
        let port = |backends: Vec<(Ipv4Addr, u16)>| ServicePort {
            name: "default/kubernetes:https\"\n".into(),
            cluster_ip: Ipv4Addr::new(10, 43, 0, 1),
            port: 443,
            protocol: Protocol::Tcp,
            backends,
        };
        let one = services("t", &[port(vec![(Ipv4Addr::LOCALHOST, 6443)])]);
        assert!(
            one.ends_with("ip daddr 10.43.0.1 tcp dport 443 dnat to 127.0.0.1:6443 comment \"default/kubernetes:https\"\n"),
            "{one}"
        );
        let two = services(
            "t",
            &[port(vec![
                (Ipv4Addr::LOCALHOST, 6443),
                (Ipv4Addr::new(10, 0, 0, 5), 6443),
            ])],
        );
        assert!(
            two.contains(
                "dnat ip to numgen random mod 2 map { 0 : 127.0.0.1 . 6443, 1 : 10.0.0.5 . 6443 }"
            ),
            "{two}"
        );
        assert_eq!(
            services("t", &[port(vec![])]),
            "flush chain ip t services\n"
        );
    }
}
