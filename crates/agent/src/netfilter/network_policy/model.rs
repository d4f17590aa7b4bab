//! What the NetworkPolicies mean for this node, as nftables objects: per policy a set of the
//! local pods it selects, per peer a set of pod addresses, per named port a set of
//! address . protocol . port, and chains of accept rules that reference them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use capstan_scheduler::selectors::{selector_matches, Labels};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::netfilter::Protocol;

/// The set of local pods isolated for ingress (some policy selects them with `Ingress`).
pub const INGRESS_ISOLATED: &str = "ingress-isolated";
pub const EGRESS_ISOLATED: &str = "egress-isolated";
/// The chains the base chains jump to: one rule per policy, then the drop for isolated pods.
pub const INGRESS: &str = "ingress";
pub const EGRESS: &str = "egress";

/// A pod as the policies see it: where it is, its labels and its named container ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub ip: Ipv4Addr,
    pub labels: Labels,
    /// Runs on this node (only those are isolated here; every pod can be a peer).
    pub local: bool,
    pub ports: Vec<NamedPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// The pod's policy-relevant facts; None for a pod policies cannot see (no address yet,
/// the host's network, finished — upstream implementations skip those too).
pub fn pod_info(pod: &Pod, node_name: &str) -> Option<PodInfo> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                protocol: Protocol::from_api(p.protocol.as_deref())?,
                port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    Some(PodInfo {
        ip,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        local: spec.node_name.as_deref() == Some(node_name),
        ports,
    })
}

/// The watched objects the rules are computed from.
#[derive(Default)]
pub struct Objects {
    /// By namespace, then name.
    pub pods: BTreeMap<String, BTreeMap<String, PodInfo>>,
    pub namespaces: HashMap<String, Labels>,
    /// By (namespace, name).
    pub policies: BTreeMap<(String, String), NetworkPolicySpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetType {
    Address,
    /// address . protocol . port (named ports resolved per pod).
    AddressPort,
}

impl SetType {
    pub fn declaration(self) -> &'static str {
        match self {
            SetType::Address => "type ipv4_addr;",
            SetType::AddressPort => "type ipv4_addr . inet_proto . inet_service;",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub kind: SetType,
    pub elements: BTreeSet<String>,
}

/// Everything the policy table should hold besides its fixed base chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub sets: BTreeMap<String, SetSpec>,
    /// Per-policy chains and the two dispatch chains, by name, their rules in order.
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Desired {
    /// The table as created: no policy, nobody isolated.
    pub fn empty() -> Desired {
        let set = SetSpec {
            kind: SetType::Address,
            elements: BTreeSet::new(),
        };
        Desired {
            sets: [
                (INGRESS_ISOLATED.to_string(), set.clone()),
                (EGRESS_ISOLATED.to_string(), set),
            ]
            .into(),
            chains: [
                (INGRESS.to_string(), vec![dispatch_end(Direction::Ingress)]),
                (EGRESS.to_string(), vec![dispatch_end(Direction::Egress)]),
            ]
            .into(),
        }
    }

    /// The fixed objects `create_table` declares (never added or deleted by a diff).
    pub fn is_fixed(name: &str) -> bool {
        matches!(name, INGRESS_ISOLATED | EGRESS_ISOLATED | INGRESS | EGRESS)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The address of the isolated pod's side (the packet's destination for ingress).
    fn own(self) -> &'static str {
        match self {
            Direction::Ingress => "ip daddr",
            Direction::Egress => "ip saddr",
        }
    }

    /// The address of the peer.
    fn peer(self) -> &'static str {
        match self {
            Direction::Ingress => "ip saddr",
            Direction::Egress => "ip daddr",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }
}

fn dispatch_end(d: Direction) -> String {
    let isolated = match d {
        Direction::Ingress => INGRESS_ISOLATED,
        Direction::Egress => EGRESS_ISOLATED,
    };
    format!("{} @{isolated} drop", d.own())
}

fn name(prefix: &str, parts: &[&[u8]]) -> String {
    format!("{prefix}-{:016x}", crate::names::stable_hash(parts))
}

/// upstream defaulting: `Ingress` always, `Egress` when there are egress rules.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

static NO_LABELS: Labels = Labels::new();

/// One rule's peers and ports (either absent or empty: everything).
type RuleParts<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

impl Objects {
    fn namespace_labels(&self, ns: &str) -> &Labels {
        self.namespaces.get(ns).unwrap_or(&NO_LABELS)
    }

    /// Every pod matching a peer's pod and namespace selectors (None: an ipBlock peer).
    fn peer_pods(&self, namespace: &str, peer: &NetworkPolicyPeer) -> Option<BTreeSet<String>> {
        let pods = |ns: &str, out: &mut BTreeSet<String>| {
            for info in self.pods.get(ns).into_iter().flat_map(|p| p.values()) {
                if peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| selector_matches(s, &info.labels))
                {
                    out.insert(info.ip.to_string());
                }
            }
        };
        let mut out = BTreeSet::new();
        match (&peer.namespace_selector, &peer.pod_selector) {
            (Some(ns_sel), _) => {
                for ns in self.pods.keys() {
                    if selector_matches(ns_sel, self.namespace_labels(ns)) {
                        pods(ns, &mut out);
                    }
                }
            }
            (None, Some(_)) => pods(namespace, &mut out),
            (None, None) => return None,
        }
        Some(out)
    }

    /// `address . protocol . port` of every candidate pod with a container port so named.
    fn named_port_elements(
        &self,
        port: &str,
        protocol: Protocol,
        local_only: bool,
    ) -> BTreeSet<String> {
        self.pods
            .values()
            .flat_map(|p| p.values())
            .filter(|info| info.local || !local_only)
            .flat_map(|info| {
                info.ports
                    .iter()
                    .filter(|p| p.name == port && p.protocol == protocol)
                    .map(|p| format!("{} . {} . {}", info.ip, protocol.keyword(), p.port))
            })
            .collect()
    }

    /// The table's contents for the current objects.
    pub fn desired(&self) -> Desired {
        let mut d = Desired::empty();
        let mut dispatch_in = Vec::new();
        let mut dispatch_out = Vec::new();
        for ((ns, pname), spec) in &self.policies {
            let id = [ns.as_bytes(), pname.as_bytes()];
            let selected: BTreeSet<String> = self
                .pods
                .get(ns)
                .into_iter()
                .flat_map(|p| p.values())
                .filter(|info| info.local)
                .filter(|info| {
                    spec.pod_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, &info.labels))
                })
                .map(|info| info.ip.to_string())
                .collect();
            let (ingress, egress) = policy_types(spec);
            let sel = name("sel", &id);
            let comment = crate::netfilter::ruleset::safe_comment(&format!("{ns}/{pname}"));
            for (on, dir) in [(ingress, Direction::Ingress), (egress, Direction::Egress)] {
                if !on {
                    continue;
                }
                let chain = name(dir.tag(), &id);
                let rules = self.direction_rules(ns, pname, spec, dir, &mut d.sets);
                let isolated = match dir {
                    Direction::Ingress => INGRESS_ISOLATED,
                    Direction::Egress => EGRESS_ISOLATED,
                };
                if let Some(set) = d.sets.get_mut(isolated) {
                    set.elements.extend(selected.iter().cloned());
                }
                let jump = format!("{} @{sel} jump {chain} comment \"{comment}\"", dir.own());
                match dir {
                    Direction::Ingress => dispatch_in.push(jump),
                    Direction::Egress => dispatch_out.push(jump),
                }
                d.chains.insert(chain, rules);
            }
            if ingress || egress {
                d.sets.insert(
                    sel,
                    SetSpec {
                        kind: SetType::Address,
                        elements: selected,
                    },
                );
            }
        }
        dispatch_in.push(dispatch_end(Direction::Ingress));
        dispatch_out.push(dispatch_end(Direction::Egress));
        d.chains.insert(INGRESS.to_string(), dispatch_in);
        d.chains.insert(EGRESS.to_string(), dispatch_out);
        d
    }

    /// One policy's accept rules for a direction: per rule, every peer × every port; the
    /// pod sets they reference go into `sets`.
    fn direction_rules(
        &self,
        ns: &str,
        pname: &str,
        spec: &NetworkPolicySpec,
        dir: Direction,
        sets: &mut BTreeMap<String, SetSpec>,
    ) -> Vec<String> {
        // (peers, ports) per rule.
        let rules: Vec<RuleParts<'_>> = match dir {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        let mut out = Vec::new();
        for (ri, (peers, ports)) in rules.into_iter().enumerate() {
            let ri = ri.to_le_bytes();
            // An absent or empty list matches everything.
            let peer_matches: Vec<String> = match peers.filter(|p| !p.is_empty()) {
                None => vec![String::new()],
                Some(peers) => peers
                    .iter()
                    .enumerate()
                    .filter_map(|(pi, peer)| {
                        if let Some(block) = &peer.ip_block {
                            return ip_block_match(
                                dir.peer(),
                                &block.cidr,
                                block.except.as_deref(),
                            );
                        }
                        let elements = self.peer_pods(ns, peer)?;
                        let set = name(
                            "peer",
                            &[
                                ns.as_bytes(),
                                pname.as_bytes(),
                                dir.tag().as_bytes(),
                                &ri,
                                &pi.to_le_bytes(),
                            ],
                        );
                        let text = format!("{} @{set} ", dir.peer());
                        sets.insert(
                            set,
                            SetSpec {
                                kind: SetType::Address,
                                elements,
                            },
                        );
                        Some(text)
                    })
                    .collect(),
            };
            let port_matches: Vec<String> = match ports.filter(|p| !p.is_empty()) {
                None => vec![String::new()],
                Some(ports) => ports
                    .iter()
                    .enumerate()
                    .filter_map(|(qi, port)| {
                        let protocol = Protocol::from_api(port.protocol.as_deref())?;
                        let proto = protocol.keyword();
                        match &port.port {
                            None => Some(format!("meta l4proto {proto} ")),
                            Some(IntOrString::Int(n)) => {
                                let first = u16::try_from(*n).ok().filter(|n| *n > 0)?;
                                match port.end_port.map(u16::try_from) {
                                    Some(Ok(last)) if last >= first => Some(format!(
                                        "meta l4proto {proto} th dport {first}-{last} "
                                    )),
                                    Some(_) => None,
                                    None => Some(format!("meta l4proto {proto} th dport {first} ")),
                                }
                            }
                            Some(IntOrString::String(port_name)) => {
                                let set = name(
                                    "np",
                                    &[
                                        ns.as_bytes(),
                                        pname.as_bytes(),
                                        dir.tag().as_bytes(),
                                        &ri,
                                        &qi.to_le_bytes(),
                                    ],
                                );
                                let elements = self.named_port_elements(
                                    port_name,
                                    protocol,
                                    dir == Direction::Ingress,
                                );
                                sets.insert(
                                    set.clone(),
                                    SetSpec {
                                        kind: SetType::AddressPort,
                                        elements,
                                    },
                                );
                                Some(format!("ip daddr . meta l4proto . th dport @{set} "))
                            }
                        }
                    })
                    .collect(),
            };
            for p in &peer_matches {
                for q in &port_matches {
                    out.push(format!("{p}{q}accept"));
                }
            }
        }
        out
    }
}

/// `ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } ` for an IPv4 ipBlock (None for IPv6 or
/// a malformed one: it admits nothing here).
fn ip_block_match(field: &str, cidr: &str, except: Option<&[String]>) -> Option<String> {
    let base = normalize_cidr(cidr)?;
    let excepted: Vec<String> = except
        .into_iter()
        .flatten()
        .filter_map(|e| normalize_cidr(e))
        .collect();
    let mut text = format!("{field} {base} ");
    if !excepted.is_empty() {
        text.push_str(&format!("{field} != {{ {} }} ", excepted.join(", ")));
    }
    Some(text)
}

/// `a.b.c.d/n` with the host bits cleared (nft refuses them set).
fn normalize_cidr(text: &str) -> Option<String> {
    let (ip, len) = text.split_once('/').unwrap_or((text, "32"));
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u32 = len.parse().ok().filter(|p| *p <= 32)?;
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some(format!("{}/{prefix}", Ipv4Addr::from(u32::from(ip) & mask)))
}

/// The spec of a watched policy keyed by where it lives.
pub fn policy_key(p: &NetworkPolicy) -> Option<(String, String)> {
    Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ip: &str, labels: &[(&str, &str)], local: bool) -> PodInfo {
        PodInfo {
            ip: ip.parse().expect("ip"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            local,
            ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        }
    }

    fn objects(policy: serde_json::Value) -> Objects {
        let mut o = Objects::default();
        let ns = o.pods.entry("ns".into()).or_default();
        ns.insert("server".into(), pod("10.1.0.2", &[("app", "web")], true));
        ns.insert(
            "client".into(),
            pod("10.1.0.3", &[("role", "client")], true),
        );
        o.pods
            .entry("other".into())
            .or_default()
            .insert("far".into(), pod("10.1.0.9", &[("role", "client")], false));
        o.namespaces.insert(
            "other".into(),
            [("team".to_string(), "b".to_string())].into(),
        );
        o.policies.insert(
            ("ns".into(), "p".into()),
            serde_json::from_value(policy).expect("spec"),
        );
        o
    }

    #[test]
    fn pods_without_an_address_or_on_the_host_network_are_not_seen() {
        let pod = |extra: serde_json::Value| -> Pod {
            let mut v = serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 80}
                ]}]},
                "status": {"phase": "Running", "podIP": "10.1.0.4"}
            });
            if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                for (k, e) in extra {
                    if let (Some(b), Some(e)) = (
                        base.get_mut(k).and_then(|b| b.as_object_mut()),
                        e.as_object(),
                    ) {
                        b.extend(e.clone());
                    }
                }
            }
            serde_json::from_value(v).expect("pod")
        };
        let info = pod_info(&pod(serde_json::json!({})), "n1").expect("seen");
        assert!(info.local);
        assert_eq!(
            info.ports,
            vec![NamedPort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53
            }]
        );
        assert!(
            !pod_info(&pod(serde_json::json!({})), "n2")
                .expect("seen")
                .local
        );
        assert!(pod_info(&pod(serde_json::json!({"status": {"podIP": null}})), "n1").is_none());
        assert!(pod_info(
            &pod(serde_json::json!({"status": {"phase": "Succeeded"}})),
            "n1"
        )
        .is_none());
        assert!(pod_info(
            &pod(serde_json::json!({"spec": {"hostNetwork": true}})),
            "n1"
        )
        .is_none());
    }

    #[test]
    fn default_deny_isolates_the_selected_pods_with_no_accept_rule() {
        let d = objects(serde_json::json!({"podSelector": {}})).desired();
        let isolated = &d.sets[INGRESS_ISOLATED].elements;
        assert_eq!(isolated.len(), 2, "{d:?}");
        assert!(d.sets[EGRESS_ISOLATED].elements.is_empty());
        let chain = d
            .chains
            .keys()
            .find(|c| c.starts_with("in-"))
            .expect("chain");
        assert!(d.chains[chain].is_empty());
        assert_eq!(d.chains[INGRESS].len(), 2);
        assert!(d.chains[INGRESS][1].ends_with("@ingress-isolated drop"));
    }

    #[test]
    fn peers_ports_and_blocks_become_rules_over_sets() {
        let d = objects(serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                          {"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010, "protocol": "UDP"}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.7/8", "except": ["10.1.0.0/16"]}}]}
            ],
            "policyTypes": ["Ingress"]
        }))
        .desired();
        assert_eq!(
            d.sets[INGRESS_ISOLATED].elements,
            ["10.1.0.2".to_string()].into()
        );
        let chain = d
            .chains
            .keys()
            .find(|c| c.starts_with("in-"))
            .expect("chain");
        let rules = &d.chains[chain];
        assert_eq!(rules.len(), 5, "{rules:?}");
        assert!(rules[1].contains("meta l4proto udp th dport 9000-9010 accept"));
        assert_eq!(
            rules[4],
            "ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } accept"
        );
        let peers: Vec<&SetSpec> = d
            .sets
            .iter()
            .filter(|(n, _)| n.starts_with("peer-"))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(peers.len(), 2);
        assert!(peers
            .iter()
            .any(|s| s.elements == ["10.1.0.3".to_string()].into()));
        assert!(peers
            .iter()
            .any(|s| s.elements == ["10.1.0.9".to_string()].into()));
        let named = d
            .sets
            .iter()
            .find(|(n, _)| n.starts_with("np-"))
            .expect("np");
        assert_eq!(
            named.1.elements,
            [
                "10.1.0.2 . tcp . 8080".to_string(),
                "10.1.0.3 . tcp . 8080".to_string()
            ]
            .into()
        );
    }

    #[test]
    fn egress_is_enforced_only_when_it_has_rules_or_is_named() {
        let d = objects(serde_json::json!({"podSelector": {}, "egress": [{}]})).desired();
        assert_eq!(d.sets[EGRESS_ISOLATED].elements.len(), 2);
        let chain = d
            .chains
            .keys()
            .find(|c| c.starts_with("out-"))
            .expect("chain");
        assert_eq!(d.chains[chain], vec!["accept".to_string()]);
        let d = objects(serde_json::json!({"podSelector": {}, "egress": []})).desired();
        assert!(d.sets[EGRESS_ISOLATED].elements.is_empty());
    }
}
