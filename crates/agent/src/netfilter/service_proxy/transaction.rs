//! The nft script taking Service ports from what the table holds to what they should hold,
//! touching only what differs: unchanged chains and elements stay, so one endpoint more
//! costs one chain and one rewritten dispatch rule, not a rebuilt table.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::rules::{Element, MapName, ObjectName, PortRules};
use crate::netfilter::ruleset::FAMILY;

/// One port's change: what the table holds for it (None: nothing) and what it should.
pub struct Change<'a> {
    pub old: Option<&'a PortRules>,
    pub new: Option<&'a PortRules>,
}

/// One transaction for all `changes`. Its steps are ordered so nothing is deleted while
/// referenced and nothing referenced before it exists: map elements out, changed chains
/// flushed, unused chains and sets deleted, new sets and chains made and filled, elements in.
pub fn script(table: &str, changes: &[Change<'_>]) -> String {
    let empty = PortRules::default();
    let mut s = String::new();
    let mut deleted_elements: BTreeMap<MapName, Vec<&Element>> = BTreeMap::new();
    let mut added_elements: BTreeMap<MapName, Vec<&Element>> = BTreeMap::new();
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty), c.new.unwrap_or(&empty));
        for e in old.elements.difference(&new.elements) {
            deleted_elements.entry(e.map).or_default().push(e);
        }
        for e in new.elements.difference(&old.elements) {
            added_elements.entry(e.map).or_default().push(e);
        }
    }
    for (map, elements) in &deleted_elements {
        let keys: Vec<String> = elements.iter().map(|e| e.key.to_string()).collect();
        let _ = writeln!(
            s,
            "delete element {FAMILY} {table} {} {{ {} }}",
            map.as_str(),
            keys.join(", ")
        );
    }
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty), c.new.unwrap_or(&empty));
        for (name, rules) in &old.chains {
            if new.chains.get(name) != Some(rules) {
                let _ = writeln!(s, "flush chain {FAMILY} {table} {name}");
            }
        }
    }
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty), c.new.unwrap_or(&empty));
        for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            let _ = writeln!(s, "delete chain {FAMILY} {table} {name}");
        }
        for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
            let _ = writeln!(s, "delete set {FAMILY} {table} {name}");
        }
    }
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty), c.new.unwrap_or(&empty));
        for (name, timeout) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
            let _ = writeln!(
                s,
                "add set {FAMILY} {table} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            );
        }
        for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
            let _ = writeln!(s, "add chain {FAMILY} {table} {name}");
        }
    }
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty), c.new.unwrap_or(&empty));
        for (name, rules) in &new.chains {
            if old.chains.get(name) == Some(rules) {
                continue;
            }
            for rule in rules {
                let _ = writeln!(s, "add rule {FAMILY} {table} {name} {rule}");
            }
        }
    }
    for (map, elements) in &added_elements {
        let entries: Vec<String> = elements
            .iter()
            .map(|e| format!("{} : {}", e.key, e.verdict))
            .collect();
        let _ = writeln!(
            s,
            "add element {FAMILY} {table} {} {{ {} }}",
            map.as_str(),
            entries.join(", ")
        );
    }
    s
}

/// Empties every Service object whatever the kernel holds of `known` (chains and sets made
/// first when missing, so the deletes cannot fail): the start of a resynchronisation after
/// a failed transaction, followed in the same transaction by a full program.
pub fn clear(table: &str, known: &[&PortRules]) -> String {
    let mut s = String::new();
    for map in MapName::ALL {
        let _ = writeln!(s, "flush map {FAMILY} {table} {}", map.as_str());
    }
    let chains: Vec<&ObjectName> = known.iter().flat_map(|r| r.chains.keys()).collect();
    for name in &chains {
        let _ = writeln!(s, "add chain {FAMILY} {table} {name}");
        let _ = writeln!(s, "flush chain {FAMILY} {table} {name}");
    }
    for name in &chains {
        let _ = writeln!(s, "delete chain {FAMILY} {table} {name}");
    }
    for r in known {
        for (name, timeout) in &r.sets {
            let _ = writeln!(
                s,
                "add set {FAMILY} {table} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            );
            let _ = writeln!(s, "delete set {FAMILY} {table} {name}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::model::{PortKey, ProxiedPort};
    use super::super::rules::port_rules;
    use super::*;
    use crate::netfilter::Protocol;
    use std::net::Ipv4Addr;

    fn rules(backends: &[u8]) -> PortRules {
        port_rules(&ProxiedPort {
            key: PortKey {
                namespace: "ns".into(),
                service: "web".into(),
                port_name: String::new(),
                protocol: Protocol::Tcp,
            },
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            affinity: None,
            cluster: backends
                .iter()
                .map(|b| (Ipv4Addr::new(10, 1, 0, *b), 8080))
                .collect(),
            local: Vec::new(),
            internal_local: false,
            external_local: false,
        })
    }

    #[test]
    fn one_more_endpoint_adds_its_chain_and_rewrites_only_the_dispatch() {
        let (old, new) = (rules(&[5]), rules(&[5, 6]));
        let s = script(
            "t",
            &[Change {
                old: Some(&old),
                new: Some(&new),
            }],
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 5, "{s}");
        assert!(lines[0].starts_with("flush chain ip t svc-"), "{s}");
        assert!(lines[1].starts_with("add chain ip t ep-"), "{s}");
        assert!(s.contains("dnat to 10.1.0.6:8080"), "{s}");
        assert!(!s.contains("dnat to 10.1.0.5:8080"), "{s}");
        assert!(lines[4].contains("numgen random mod 2"), "{s}");
        assert!(!s.contains("element"), "{s}");
    }

    #[test]
    fn removing_a_port_deletes_elements_before_chains() {
        let old = rules(&[5]);
        let s = script(
            "t",
            &[Change {
                old: Some(&old),
                new: None,
            }],
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "delete element ip t service-ips { 10.96.0.10 . tcp . 80 }"
        );
        assert!(lines[1].starts_with("flush chain"));
        assert!(lines.last().is_some_and(|l| l.starts_with("delete chain")));
        let none = rules(&[]);
        let s = script(
            "t",
            &[Change {
                old: Some(&old),
                new: Some(&none),
            }],
        );
        assert!(s.ends_with(
            "add element ip t no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }\n"
        ));
    }
}
