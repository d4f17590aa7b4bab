//! PodTopologySpread: `DoNotSchedule` constraints filter by skew against the least-loaded
//! eligible domain (honouring minDomains and the node inclusion policies); `ScheduleAnyway`
//! constraints score, normalised as upstream.

use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodSpec, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{node_affinity, taints, Code, Plugin, Rejection, MAX_NODE_SCORE};
use crate::cache::{Cache, KeyDomains, Map, NodeInfo, PodInfo, Set, NO_DOMAIN};
use crate::selectors::{selector_matches, single_label};

pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// A constraint with its selector completed by `matchLabelKeys`.
#[derive(Debug, Clone)]
pub struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Option<LabelSelector>,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
}

fn constraints(pod: &PodInfo, spec: &PodSpec, action: &str) -> Vec<Constraint> {
    let labels = pod.labels();
    spec.topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == action)
        .map(|c: &TopologySpreadConstraint| {
            let mut selector = c.label_selector.clone();
            if let Some(sel) = selector.as_mut() {
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = labels.get(k) {
                        sel.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: k.clone(),
                                operator: "In".into(),
                                values: Some(vec![v.clone()]),
                            },
                        );
                    }
                }
            }
            Constraint {
                max_skew: c.max_skew as i64,
                topology_key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains.unwrap_or(1) as i64,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

fn count_matching(node: &NodeInfo, sel: Option<&LabelSelector>, ns: &str) -> i64 {
    let Some(sel) = sel else { return 0 };
    if let Some(n) = node.count_selected(sel, |n| n == ns, true) {
        return n;
    }
    node.pods
        .iter()
        .filter(|p| !p.terminating && p.namespace() == ns && selector_matches(sel, p.labels()))
        .count() as i64
}

/// Whether a node counts for the constraint (the inclusion policies).
fn eligible(c: &Constraint, spec: &PodSpec, node: &NodeInfo) -> bool {
    let Some(n) = &node.node else { return false };
    if c.honor_affinity && !node_affinity::matches_required(spec, n) {
        return false;
    }
    if c.honor_taints {
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        if taints::filter(taints, spec.tolerations.as_deref().unwrap_or(&[])).is_err() {
            return false;
        }
    }
    true
}

/// Per constraint, whether every existing node counts for it (true: `eligible` need not be
/// asked): the affinity policy applies only when the pod has a node selector or required
/// node affinity, the taints policy whenever it is `Honor`.
fn counts_every_node(cs: &[Constraint], spec: &PodSpec) -> Vec<bool> {
    let affinity = spec.node_selector.as_ref().is_some_and(|s| !s.is_empty())
        || node_affinity::required(spec).is_some();
    cs.iter()
        .map(|c| !(c.honor_taints || (c.honor_affinity && affinity)))
        .collect()
}

fn has_all_keys(cs: &[Constraint], node: &NodeInfo) -> bool {
    cs.iter()
        .all(|c| node.labels().contains_key(&c.topology_key))
}

/// upstream PreFilter state: matching pods per domain, per constraint. Domains are
/// numbered per topology key by the cache (`KeyDomains`): with hostname as the key there
/// is a domain per node, and counting into a vector by number costs a few instructions per
/// node where hashing each node's value into a map made this pass most of a decision.
#[derive(Default)]
pub struct FilterState<'c> {
    constraints: Vec<Constraint>,
    domains: Vec<Arc<KeyDomains>>,
    /// Per constraint, per domain number: matching pods on the nodes that count.
    counts: Vec<Vec<i64>>,
    /// Per constraint, the global minimum the skew is measured against (0 with fewer
    /// domains than minDomains), computed once here rather than per filtered node: with
    /// hostname as the key there is a domain per node, so a per-node minimum cost O(nodes²).
    mins: Vec<i64>,
    self_match: Vec<bool>,
    _cache: PhantomData<&'c Cache>,
}

pub fn prefilter<'c>(pod: &PodInfo, spec: &PodSpec, cache: &'c Cache) -> FilterState<'c> {
    let cs = constraints(pod, spec, "DoNotSchedule");
    if cs.is_empty() {
        return FilterState::default();
    }
    let ns = pod.namespace();
    let domains: Vec<Arc<KeyDomains>> = cs.iter().map(|c| cache.domains(&c.topology_key)).collect();
    let mut counts: Vec<Vec<i64>> = domains.iter().map(|d| vec![0; d.len()]).collect();
    // A selector of one label is counted from the cache's index of where such pods are
    // (below): the pass over the nodes then only finds the eligible domains.
    let indexed: Vec<Option<(&str, &str)>> = cs
        .iter()
        .map(|c| c.selector.as_ref().and_then(single_label))
        .collect();
    // Whether a constraint counts every node with its key: nothing of the node to check
    // when neither policy applies (the common case).
    let every = counts_every_node(&cs, spec);
    let slots = cache.node_slots();
    // Per constraint: which node slots count, and which domains have such a node. One
    // constraint counting every node with its key needs no pass: every domain has one.
    let (counted, present): (Vec<Vec<bool>>, Vec<Vec<bool>>) = if cs.len() == 1 && every[0] {
        let d = &domains[0];
        let counted = (0..slots.len())
            .map(|i| d.of_slot(i) != NO_DOMAIN)
            .collect();
        (vec![counted], vec![vec![true; d.len()]])
    } else {
        let mut counted = vec![vec![false; slots.len()]; cs.len()];
        let mut present: Vec<Vec<bool>> = domains.iter().map(|d| vec![false; d.len()]).collect();
        for (i, node) in slots.iter().enumerate() {
            // A node counts only with every constraint's key (and only if it exists: a
            // slot without a Node object has no domain).
            if domains.iter().any(|d| d.of_slot(i) == NO_DOMAIN) {
                continue;
            }
            for (j, c) in cs.iter().enumerate() {
                if !every[j] && !eligible(c, spec, node) {
                    continue;
                }
                let d = domains[j].of_slot(i) as usize;
                counted[j][i] = true;
                present[j][d] = true;
                if indexed[j].is_none() {
                    counts[j][d] += count_matching(node, c.selector.as_ref(), ns);
                }
            }
        }
        (counted, present)
    };
    for (j, label) in indexed.iter().enumerate() {
        let Some((k, v)) = *label else { continue };
        for (name, n) in cache.placed_with_label(k, v, |x| x == ns, true) {
            // Only nodes the pass above counts (with every key, existing, eligible).
            let Some(slot) = cache.slot_of(name) else {
                continue;
            };
            if !counted[j].get(slot).copied().unwrap_or(false) {
                continue;
            }
            counts[j][domains[j].of_slot(slot) as usize] += n;
        }
    }
    let self_match = cs
        .iter()
        .map(|c| {
            c.selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, pod.labels()))
        })
        .collect();
    let mins = cs
        .iter()
        .enumerate()
        .map(|(j, c)| {
            // Over the domains that have a node that counts.
            let in_play = || counts[j].iter().zip(&present[j]).filter(|(_, p)| **p);
            if (in_play().count() as i64) < c.min_domains {
                0
            } else {
                in_play().map(|(n, _)| *n).min().unwrap_or(0)
            }
        })
        .collect();
    FilterState {
        constraints: cs,
        domains,
        counts,
        mins,
        self_match,
        _cache: PhantomData,
    }
}

pub fn filter(s: &FilterState<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    for (i, c) in s.constraints.iter().enumerate() {
        // The node's domain by its slot; by its label when the slot has none (it lacks
        // the key).
        let mut domain = s.domains[i].of_slot(node.slot);
        if domain == NO_DOMAIN {
            let Some(value) = node.labels().get(&c.topology_key) else {
                return Err(Rejection::new(
                    Plugin::PodTopologySpread,
                    Code::Unresolvable,
                    REASON_LABEL,
                ));
            };
            domain = s.domains[i].of_value(value).unwrap_or(NO_DOMAIN);
        }
        let here = s.counts[i].get(domain as usize).copied().unwrap_or(0);
        let skew = here + s.self_match[i] as i64 - s.mins[i];
        if skew > c.max_skew {
            return Err(Rejection::new(
                Plugin::PodTopologySpread,
                Code::Unschedulable,
                REASON_SKEW,
            ));
        }
    }
    Ok(())
}

/// upstream PreScore for ScheduleAnyway constraints over the feasible nodes.
pub struct ScoreState {
    constraints: Vec<Constraint>,
    pair_counts: Map<(usize, String), i64>,
    weights: Vec<f64>,
    ignored: Set<String>,
    namespace: String,
}

pub fn prescore(
    pod: &PodInfo,
    spec: &PodSpec,
    cache: &Cache,
    feasible: &[&NodeInfo],
) -> Option<ScoreState> {
    let cs = constraints(pod, spec, "ScheduleAnyway");
    if cs.is_empty() {
        return None;
    }
    let mut ignored = Set::default();
    let mut pair_counts = Map::default();
    let mut domains: Vec<Set<String>> = vec![Set::default(); cs.len()];
    for n in feasible {
        if !has_all_keys(&cs, n) {
            ignored.insert(n.name().to_string());
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let v = n.labels()[&c.topology_key].clone();
            domains[i].insert(v.clone());
            if c.topology_key != HOSTNAME {
                pair_counts.insert((i, v), 0i64);
            }
        }
    }
    let ns = pod.namespace().to_string();
    for node in cache.nodes() {
        if !has_all_keys(&cs, node) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if c.topology_key == HOSTNAME || !eligible(c, spec, node) {
                continue;
            }
            let v = node.labels()[&c.topology_key].clone();
            if let Some(cnt) = pair_counts.get_mut(&(i, v)) {
                *cnt += count_matching(node, c.selector.as_ref(), &ns);
            }
        }
    }
    let weights = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME {
                feasible.len() - ignored.len()
            } else {
                domains[i].len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    Some(ScoreState {
        constraints: cs,
        pair_counts,
        weights,
        ignored,
        namespace: ns,
    })
}

/// The raw score (more matching pods in the node's domains = higher = worse); None for a
/// node lacking a topology key (it gets 0 after normalising).
pub fn score(s: &ScoreState, node: &NodeInfo) -> Option<i64> {
    if s.ignored.contains(node.name()) {
        return None;
    }
    let mut score = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        if let Some(v) = node.labels().get(&c.topology_key) {
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(node, c.selector.as_ref(), &s.namespace)
            } else {
                s.pair_counts.get(&(i, v.clone())).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
    }
    Some(score.round() as i64)
}

/// upstream NormalizeScore: fewer matching pods scores higher; ignored nodes get 0.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let valid = raw.iter().flatten().copied();
    let min = valid.clone().min().unwrap_or(0);
    let max = valid.max().unwrap_or(0);
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache, info};
    use serde_json::json;

    fn zones() -> Cache {
        cache(&[
            ("n1", json!({"zone": "a", "kubernetes.io/hostname": "n1"})),
            ("n2", json!({"zone": "b", "kubernetes.io/hostname": "n2"})),
            (
                "n3",
                json!({"zone": "c", "kubernetes.io/hostname": "n3", "gpu": "yes"}),
            ),
            ("nolabel", json!({"kubernetes.io/hostname": "nolabel"})),
        ])
    }

    fn web(uid: &str) -> std::sync::Arc<PodInfo> {
        info(
            json!({"metadata": {"name": uid, "uid": uid, "namespace": "d", "labels": {"app": "web"}}, "spec": {"containers": []}}),
        )
    }

    fn spread(extra: serde_json::Value) -> std::sync::Arc<PodInfo> {
        let mut c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        info(
            json!({"metadata": {"name": "new", "uid": "new", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "topologySpreadConstraints": [c]}}),
        )
    }

    fn run(c: &Cache, p: &PodInfo) -> Vec<Result<(), Rejection>> {
        let spec = p.pod.spec.clone().unwrap();
        let s = prefilter(p, &spec, c);
        c.nodes().map(|n| filter(&s, n)).collect()
    }

    #[test]
    fn skew_against_the_emptiest_domain() {
        let mut c = zones();
        c.assume(web("w1"), "n1");
        c.assume(web("w2"), "n2");
        let r = run(&c, &spread(json!({})));
        // a=1, b=1, c=0: a or b would make skew 2.
        assert_eq!(r[0].as_ref().unwrap_err().reason_list(), vec![REASON_SKEW]);
        assert!(r[1].is_err());
        assert!(r[2].is_ok());
        assert_eq!(r[3].as_ref().unwrap_err().reason_list(), vec![REASON_LABEL]);
        // maxSkew 2 allows it.
        assert!(run(&c, &spread(json!({"maxSkew": 2})))[0].is_ok());
    }

    #[test]
    fn domains_follow_nodes_that_come_go_and_change_labels() {
        let mut c = zones();
        c.assume(web("w1"), "n1");
        c.assume(web("w2"), "n2");
        c.assume(web("w3"), "n3");
        // a=1, b=1, c=1: anywhere with a zone.
        assert!(run(&c, &spread(json!({})))[..3].iter().all(Result::is_ok));
        // A new zone with no pod: only it is within the skew.
        let relabel = |c: &mut Cache, name: &str, labels: serde_json::Value| {
            c.upsert_node(crate::plugins::testing::node(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
            })));
        };
        relabel(
            &mut c,
            "n0",
            json!({"zone": "d", "kubernetes.io/hostname": "n0"}),
        );
        let ok = |r: Vec<Result<(), Rejection>>| r.iter().map(Result::is_ok).collect::<Vec<_>>();
        // Nodes in name order: n0, n1, n2, n3, nolabel.
        assert_eq!(
            ok(run(&c, &spread(json!({})))),
            vec![true, false, false, false, false]
        );
        // n0 joins zone a (n1's pod counts for it), d is gone: every zone at 1.
        relabel(
            &mut c,
            "n0",
            json!({"zone": "a", "kubernetes.io/hostname": "n0"}),
        );
        assert_eq!(
            ok(run(&c, &spread(json!({})))),
            vec![true, true, true, true, false]
        );
        // `nolabel` gets a zone of its own: the emptiest again.
        relabel(
            &mut c,
            "nolabel",
            json!({"zone": "e", "kubernetes.io/hostname": "nolabel"}),
        );
        assert_eq!(
            ok(run(&c, &spread(json!({})))),
            vec![false, false, false, false, true]
        );
        // And goes: back to every zone at 1.
        c.remove_node("nolabel");
        assert_eq!(
            ok(run(&c, &spread(json!({})))),
            vec![true, true, true, true]
        );
    }

    #[test]
    fn with_two_constraints_only_nodes_with_both_keys_count() {
        let mut c = zones();
        for (w, n) in [("w1", "n1"), ("w2", "n2"), ("w3", "n3")] {
            c.assume(web(w), n);
        }
        let two = info(
            json!({"metadata": {"name": "new", "uid": "new", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"app": "web"}}},
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        );
        // `nolabel` has no zone: it is no hostname domain either, so the hostname minimum
        // is 1 (not its 0) and n1..n3 keep both skews at 1.
        let r = run(&c, &two);
        assert!(r[..3].iter().all(Result::is_ok), "{r:?}");
        assert_eq!(r[3].as_ref().unwrap_err().reason_list(), vec![REASON_LABEL]);
    }

    #[test]
    fn min_domains_and_node_affinity_policy() {
        let mut c = zones();
        c.assume(web("w1"), "n3");
        c.assume(web("w2"), "n3");
        let pinned = |policy: &str| {
            info(
                json!({"metadata": {"name": "p", "uid": "p", "namespace": "d", "labels": {"app": "web"}},
                "spec": {"containers": [], "nodeSelector": {"gpu": "yes"}, "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                     "nodeAffinityPolicy": policy, "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
            )
        };
        // Honour: only zone c counts (min 2), so n3 keeps the skew at 1.
        assert!(run(&c, &pinned("Honor"))[2].is_ok());
        // Ignore: empty zones a and b count (min 0): n3 would make skew 3.
        assert!(run(&c, &pinned("Ignore"))[2].is_err());
        // One pod per zone: any zone keeps the skew at 1...
        let mut c = zones();
        c.assume(web("w1"), "n1");
        c.assume(web("w2"), "n2");
        c.assume(web("w3"), "n3");
        assert!(run(&c, &spread(json!({})))[0].is_ok());
        // ...but minDomains 5 > 3 domains makes the minimum 0: every zone is refused.
        let r = run(&c, &spread(json!({"minDomains": 5})));
        assert!(r[..3].iter().all(Result::is_err));
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let mut c = zones();
        c.assume(web("w1"), "n1");
        c.assume(web("w2"), "n1");
        c.assume(web("w3"), "n2");
        let p = info(
            json!({"metadata": {"name": "new", "uid": "new", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        );
        let spec = p.pod.spec.clone().unwrap();
        let feasible: Vec<&NodeInfo> = c.nodes().collect();
        let s = prescore(&p, &spec, &c, &feasible).unwrap();
        let raw: Vec<Option<i64>> = feasible.iter().map(|n| score(&s, n)).collect();
        // weight ln(3 + 2) = 1.609: a = 2 * 1.609 = 3, b = 2, c = 0, nolabel ignored.
        assert_eq!(raw, vec![Some(3), Some(2), Some(0), None]);
        assert_eq!(normalize(&raw), vec![0, 33, 100, 0]);
    }
}
