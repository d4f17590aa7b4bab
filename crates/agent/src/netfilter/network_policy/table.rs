//! The policy table's nft text: the table with its fixed hooks at start, then per change the
//! difference between what it holds and what it should — set elements added and removed,
//! only changed chains rewritten — in one transaction.

use std::fmt::Write;

use super::model::{Desired, EGRESS, EGRESS_ISOLATED, INGRESS, INGRESS_ISOLATED};
use crate::netfilter::ruleset::FAMILY;

/// The table with nobody isolated. Pod traffic is seen in the `ip` family's forward hook:
/// routed packets, and bridged ones between pods of this node through br_netfilter
/// (`bridge-nf-call-iptables`, which the Service proxy needs too), both after the Service
/// proxy's DNAT at prerouting, so policies see backend pods' addresses. A pod's packets to
/// the node itself (cluster DNS, host ports) reach the input hook: egress applies there
/// too. Egress and ingress are separate base chains: an accept ends only its own chain, so
/// a packet allowed out still has to be let in; replies to allowed connections pass
/// (conntrack). The node's own packets to its pods (probes) are not policed, as upstream.
pub fn create_table(table: &str) -> String {
    format!(
        "add table {FAMILY} {table}
delete table {FAMILY} {table}
table {FAMILY} {table} {{
  set {INGRESS_ISOLATED} {{ type ipv4_addr; }}
  set {EGRESS_ISOLATED} {{ type ipv4_addr; }}
  chain {INGRESS} {{
    ip daddr @{INGRESS_ISOLATED} drop
  }}
  chain {EGRESS} {{
    ip saddr @{EGRESS_ISOLATED} drop
  }}
  chain egress-forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    jump {EGRESS}
  }}
  chain ingress-forward {{
    type filter hook forward priority filter + 1; policy accept;
    ct state established,related accept
    jump {INGRESS}
  }}
  chain egress-input {{
    type filter hook input priority filter; policy accept;
    ct state established,related accept
    jump {EGRESS}
  }}
}}
"
    )
}

/// Deletes the table if it exists (`add` first makes the `delete` never fail).
pub fn delete_table(table: &str) -> String {
    format!("add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n")
}

/// The transaction taking the table from `old` to `new`. Ordered so nothing is referenced
/// before it exists or deleted while referenced: new sets, element changes, new chains,
/// changed chains rewritten (the dispatch chains among them), then unused chains and sets
/// deleted.
pub fn script(table: &str, old: &Desired, new: &Desired) -> String {
    let mut s = String::new();
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            let _ = writeln!(
                s,
                "add set {FAMILY} {table} {name} {{ {} }}",
                set.kind.declaration()
            );
        }
    }
    for (name, set) in &new.sets {
        let before = old.sets.get(name).filter(|o| o.kind == set.kind);
        if let Some(before) = before {
            let gone: Vec<&str> = before
                .elements
                .difference(&set.elements)
                .map(String::as_str)
                .collect();
            elements(&mut s, "delete", table, name, &gone);
        }
        let added: Vec<&str> = match before {
            Some(before) => set
                .elements
                .difference(&before.elements)
                .map(String::as_str)
                .collect(),
            None => set.elements.iter().map(String::as_str).collect(),
        };
        elements(&mut s, "add", table, name, &added);
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(s, "add chain {FAMILY} {table} {name}");
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(before) if before == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {FAMILY} {table} {name}");
            }
            None => {}
        }
        for rule in rules {
            let _ = writeln!(s, "add rule {FAMILY} {table} {name} {rule}");
        }
    }
    let removed_chains: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n) && !Desired::is_fixed(n))
        .collect();
    for name in &removed_chains {
        let _ = writeln!(s, "flush chain {FAMILY} {table} {name}");
    }
    for name in &removed_chains {
        let _ = writeln!(s, "delete chain {FAMILY} {table} {name}");
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) && !Desired::is_fixed(name) {
            let _ = writeln!(s, "delete set {FAMILY} {table} {name}");
        }
    }
    s
}

fn elements(s: &mut String, verb: &str, table: &str, set: &str, items: &[&str]) {
    // Long element lists are split so one line never grows without bound.
    for chunk in items.chunks(512) {
        let _ = writeln!(
            s,
            "{verb} element {FAMILY} {table} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{SetSpec, SetType};
    use super::*;

    #[test]
    fn a_pod_joining_a_selector_is_one_element() {
        let mut old = Desired::empty();
        old.sets.insert(
            "peer-1".into(),
            SetSpec {
                kind: SetType::Address,
                elements: ["10.1.0.2".to_string()].into(),
            },
        );
        old.chains
            .insert("in-1".into(), vec!["ip saddr @peer-1 accept".into()]);
        let mut new = old.clone();
        if let Some(set) = new.sets.get_mut("peer-1") {
            set.elements.insert("10.1.0.3".into());
            set.elements.remove("10.1.0.2");
        }
        assert_eq!(
            script("t", &old, &new),
            "delete element ip t peer-1 { 10.1.0.2 }\nadd element ip t peer-1 { 10.1.0.3 }\n"
        );
        assert_eq!(script("t", &new, &new), "");
    }

    #[test]
    fn a_removed_policy_goes_after_the_dispatch_stops_jumping_to_it() {
        let mut old = Desired::empty();
        old.sets.insert(
            "sel-1".into(),
            SetSpec {
                kind: SetType::Address,
                elements: Default::default(),
            },
        );
        old.chains.insert("in-1".into(), Vec::new());
        old.chains.insert(
            INGRESS.into(),
            vec![
                "ip daddr @sel-1 jump in-1".into(),
                "ip daddr @ingress-isolated drop".into(),
            ],
        );
        let s = script("t", &old, &Desired::empty());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines,
            vec![
                "flush chain ip t ingress",
                "add rule ip t ingress ip daddr @ingress-isolated drop",
                "flush chain ip t in-1",
                "delete chain ip t in-1",
                "delete set ip t sel-1",
            ]
        );
    }
}
