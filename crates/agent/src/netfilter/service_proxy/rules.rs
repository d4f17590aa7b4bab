//! One Service port as nftables objects, kube-proxy's nftables shapes: a dispatch chain per
//! policy (random over endpoint chains, ClientIP affinity sets first), an external chain for
//! NodePort and external addresses, one chain per endpoint, and verdict-map elements.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::model::{Backend, PortKey, ProxiedPort};
use crate::netfilter::ruleset::{safe_comment, MARK_FOR_MASQUERADE, REJECT};
use crate::netfilter::Protocol;

/// A chain or set name: a prefix and hex digits of a hash, so nothing from the API reaches
/// it and it stays far under nftables' length limit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    fn new(prefix: &str, hash: u64) -> ObjectName {
        ObjectName(format!("{prefix}-{hash:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The verdict maps of the table (declared by `ruleset::create_table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    /// ClusterIP . protocol . port, matched for this node's pods and the node itself.
    ServiceIps,
    /// External and load-balancer address . protocol . port, matched from anywhere.
    ExternalIps,
    /// protocol . NodePort on any of the node's addresses.
    NodePorts,
    /// Address keys of Services without usable endpoints (filter hooks: reject or drop).
    NoEndpointServices,
    /// NodePort keys of Services without usable endpoints.
    NoEndpointNodePorts,
}

impl MapName {
    pub const ALL: [MapName; 5] = [
        MapName::ServiceIps,
        MapName::ExternalIps,
        MapName::NodePorts,
        MapName::NoEndpointServices,
        MapName::NoEndpointNodePorts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MapName::ServiceIps => "service-ips",
            MapName::ExternalIps => "external-ips",
            MapName::NodePorts => "service-nodeports",
            MapName::NoEndpointServices => "no-endpoint-services",
            MapName::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementKey {
    Address(Ipv4Addr, Protocol, u16),
    Port(Protocol, u16),
}

impl std::fmt::Display for ElementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElementKey::Address(ip, proto, port) => {
                write!(f, "{ip} . {} . {port}", proto.keyword())
            }
            ElementKey::Port(proto, port) => write!(f, "{} . {port}", proto.keyword()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Goto(ObjectName),
    /// Connection refused: the Service has no endpoints at all.
    Reject,
    /// A `Local` policy with no endpoint on this node (upstream drops these).
    Drop,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Reject => write!(f, "goto {REJECT}"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub map: MapName,
    pub key: ElementKey,
    pub verdict: Verdict,
}

/// Everything one Service port owns in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<ObjectName, Vec<String>>,
    /// Affinity set name → its timeout in seconds.
    pub sets: BTreeMap<ObjectName, u32>,
    pub elements: BTreeSet<Element>,
}

impl PortRules {
    /// How many nftables objects (chains, sets, rules, elements) this holds — for logs.
    pub fn size(&self) -> usize {
        self.chains.values().map(|r| r.len() + 1).sum::<usize>()
            + self.sets.len()
            + self.elements.len()
    }
}

fn key_hash(key: &PortKey) -> u64 {
    crate::names::stable_hash(&[
        key.namespace.as_bytes(),
        key.service.as_bytes(),
        key.port_name.as_bytes(),
        key.protocol.keyword().as_bytes(),
    ])
}

/// The objects for `port`.
pub fn port_rules(port: &ProxiedPort) -> PortRules {
    let h = key_hash(&port.key);
    let comment = safe_comment(&port.key.display());
    let endpoint_hash = |(ip, p): Backend| {
        crate::names::stable_hash(&[&h.to_be_bytes(), &ip.octets(), &p.to_be_bytes()])
    };
    let endpoint_chain = |b: Backend| ObjectName::new("ep", endpoint_hash(b));
    // The timeout is part of a set's definition: a new timeout makes a new set.
    let affinity_set =
        |b: Backend, timeout: u32| ObjectName(format!("aff-{:016x}-{timeout}", endpoint_hash(b)));
    let proto = port.protocol_keyword();
    let mut rules = PortRules::default();

    let cluster_chain = ObjectName::new("svc", h);
    let local_chain = ObjectName::new("loc", h);
    let external_chain = ObjectName::new("ext", h);
    let needs_cluster = !port.cluster.is_empty() && (!port.internal_local || port.has_external());
    let needs_local = !port.local.is_empty()
        && (port.internal_local || port.external_local && port.has_external());

    let dispatch = |chain: &ObjectName, backends: &[Backend], rules: &mut PortRules| {
        let mut body = Vec::new();
        if let Some(timeout) = port.affinity {
            for b in backends {
                body.push(format!(
                    "ip saddr @{} goto {}",
                    affinity_set(*b, timeout),
                    endpoint_chain(*b)
                ));
            }
        }
        body.push(match backends {
            [one] => format!("goto {} comment \"{comment}\"", endpoint_chain(*one)),
            many => {
                let mut vmap = String::new();
                for (i, b) in many.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(vmap, "{sep}{i} : goto {}", endpoint_chain(*b));
                }
                format!(
                    "numgen random mod {} vmap {{ {vmap} }} comment \"{comment}\"",
                    many.len()
                )
            }
        });
        rules.chains.insert(chain.clone(), body);
        for b in backends {
            let name = endpoint_chain(*b);
            if rules.chains.contains_key(&name) {
                continue;
            }
            let (ip, target) = *b;
            // Hairpin: a pod reaching itself through the Service must see the reply come
            // from elsewhere than its own address, or it answers itself directly.
            let mut body = vec![format!("ip saddr {ip} jump {MARK_FOR_MASQUERADE}")];
            if let Some(timeout) = port.affinity {
                let set = affinity_set(*b, timeout);
                body.push(format!("update @{set} {{ ip saddr }}"));
                rules.sets.insert(set, timeout);
            }
            body.push(format!("meta l4proto {proto} dnat to {ip}:{target}"));
            rules.chains.insert(name, body);
        }
    };
    if needs_cluster {
        dispatch(&cluster_chain, &port.cluster, &mut rules);
    }
    if needs_local {
        dispatch(&local_chain, &port.local, &mut rules);
    }

    // Traffic to the ClusterIP.
    let cluster_key = ElementKey::Address(port.cluster_ip, port.key.protocol, port.port);
    let internal = if port.internal_local {
        needs_local.then(|| local_chain.clone())
    } else {
        needs_cluster.then(|| cluster_chain.clone())
    };
    let no_endpoints = if port.cluster.is_empty() {
        Verdict::Reject
    } else {
        Verdict::Drop
    };
    rules.elements.insert(match internal {
        Some(chain) => Element {
            map: MapName::ServiceIps,
            key: cluster_key,
            verdict: Verdict::Goto(chain),
        },
        None => Element {
            map: MapName::NoEndpointServices,
            key: cluster_key,
            verdict: no_endpoints.clone(),
        },
    });

    // Traffic to a NodePort or an external address.
    if port.has_external() {
        let mut body = Vec::new();
        if port.external_local {
            // The node's own clients reach every endpoint (they are not external).
            if needs_cluster {
                body.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
                body.push(format!("fib saddr type local goto {cluster_chain}"));
            }
            body.push(if needs_local {
                format!("goto {local_chain}")
            } else {
                "drop".to_string()
            });
        } else if needs_cluster {
            // The reply must come back through this node to be un-NATed.
            body.push(format!("jump {MARK_FOR_MASQUERADE}"));
            body.push(format!("goto {cluster_chain}"));
        }
        let external = if needs_cluster || needs_local {
            rules.chains.insert(external_chain.clone(), body);
            Some(external_chain)
        } else {
            None
        };
        let mut add = |map: MapName, no_map: MapName, key: ElementKey| {
            rules.elements.insert(match &external {
                Some(chain) => Element {
                    map,
                    key,
                    verdict: Verdict::Goto(chain.clone()),
                },
                None => Element {
                    map: no_map,
                    key,
                    verdict: Verdict::Reject,
                },
            });
        };
        for ip in &port.external_ips {
            add(
                MapName::ExternalIps,
                MapName::NoEndpointServices,
                ElementKey::Address(*ip, port.key.protocol, port.port),
            );
        }
        if let Some(node_port) = port.node_port {
            add(
                MapName::NodePorts,
                MapName::NoEndpointNodePorts,
                ElementKey::Port(port.key.protocol, node_port),
            );
        }
    }
    rules
}

impl ProxiedPort {
    fn protocol_keyword(&self) -> &'static str {
        self.key.protocol.keyword()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(cluster: Vec<Backend>, local: Vec<Backend>) -> ProxiedPort {
        ProxiedPort {
            key: PortKey {
                namespace: "ns".into(),
                service: "web".into(),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
            },
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            affinity: None,
            cluster,
            local,
            internal_local: false,
            external_local: false,
        }
    }

    const A: Backend = (Ipv4Addr::new(10, 1, 0, 5), 8080);
    const B: Backend = (Ipv4Addr::new(10, 1, 0, 6), 8080);

    #[test]
    fn random_dispatch_over_endpoint_chains() {
        let r = port_rules(&port(vec![A, B], vec![]));
        assert_eq!(r.chains.len(), 3, "{r:#?}");
        let (svc, body) = r
            .chains
            .iter()
            .find(|(n, _)| n.as_str().starts_with("svc-"))
            .expect("service chain");
        assert!(
            body[0].starts_with("numgen random mod 2 vmap { 0 : goto ep-")
                && body[0].ends_with("} comment \"ns/web:http/tcp\""),
            "{body:?}"
        );
        let ep = r
            .chains
            .iter()
            .find(|(n, b)| n.as_str().starts_with("ep-") && b[1].contains("10.1.0.6:8080"))
            .expect("endpoint chain");
        assert_eq!(
            ep.1,
            &vec![
                "ip saddr 10.1.0.6 jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat to 10.1.0.6:8080".to_string()
            ]
        );
        assert_eq!(
            r.elements.iter().collect::<Vec<_>>(),
            vec![&Element {
                map: MapName::ServiceIps,
                key: ElementKey::Address(Ipv4Addr::new(10, 96, 0, 10), Protocol::Tcp, 80),
                verdict: Verdict::Goto(svc.clone())
            }]
        );
    }

    #[test]
    fn no_endpoints_reject_and_local_policy_without_local_ones_drops() {
        let mut p = port(vec![], vec![]);
        p.node_port = Some(30080);
        let r = port_rules(&p);
        assert!(r.chains.is_empty());
        let verdicts: Vec<_> = r.elements.iter().map(|e| (e.map, &e.verdict)).collect();
        assert_eq!(
            verdicts,
            vec![
                (MapName::NoEndpointServices, &Verdict::Reject),
                (MapName::NoEndpointNodePorts, &Verdict::Reject)
            ]
        );
        let mut p = port(vec![A], vec![]);
        p.internal_local = true;
        let r = port_rules(&p);
        assert!(r.chains.is_empty(), "{r:#?}");
        assert_eq!(
            r.elements.iter().next().map(|e| &e.verdict),
            Some(&Verdict::Drop)
        );
    }

    #[test]
    fn affinity_sets_and_external_chain() {
        let mut p = port(vec![A, B], vec![A]);
        p.affinity = Some(60);
        p.node_port = Some(30080);
        p.external_local = true;
        let r = port_rules(&p);
        assert_eq!(r.sets.len(), 2);
        assert!(r.sets.keys().all(|s| s.as_str().ends_with("-60")));
        let svc = r
            .chains
            .iter()
            .find(|(n, _)| n.as_str().starts_with("svc-"))
            .expect("service chain")
            .1;
        assert!(svc[0].starts_with("ip saddr @aff-") && svc[0].contains(" goto ep-"));
        assert_eq!(svc.len(), 3);
        let ext = r
            .chains
            .iter()
            .find(|(n, _)| n.as_str().starts_with("ext-"))
            .expect("external chain")
            .1;
        assert_eq!(ext.len(), 3);
        assert!(ext[2].starts_with("goto loc-"), "{ext:?}");
        assert!(r.elements.iter().any(
            |e| e.map == MapName::NodePorts && e.key == ElementKey::Port(Protocol::Tcp, 30080)
        ));
    }
}
