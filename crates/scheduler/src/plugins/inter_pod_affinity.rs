//! InterPodAffinity: the incoming pod's required affinity and anti-affinity, and existing
//! pods' required anti-affinity, by topology domain (filter); preferred terms of both sides
//! and existing pods' required affinity (weight 1) score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{Code, Plugin, Rejection};
use crate::cache::{AntiGroup, Cache, KeyDomains, Map, NodeInfo, PodInfo, Set};
use crate::selectors::{labels_of, selector_matches, Labels};

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// upstream's `HardPodAffinityWeight` default.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Counts (or weights) per topology pair: per topology key, a count per domain, numbered
/// by the cache's domain table of that key (`KeyDomains`), so that counting a node and
/// reading a node's count are vector steps by its slot, not a label lookup and a hash of
/// its value.
#[derive(Debug, Default)]
pub struct PairCounts<'c> {
    cache: Option<&'c Cache>,
    /// Few keys per pod: searched in order.
    keys: Vec<(String, Arc<KeyDomains>, Vec<i64>)>,
}

impl<'c> PairCounts<'c> {
    fn new(cache: &'c Cache) -> Self {
        PairCounts {
            cache: Some(cache),
            keys: Vec::new(),
        }
    }

    fn key_index(&mut self, key: &str) -> Option<usize> {
        if let Some(i) = self.keys.iter().position(|(k, _, _)| k == key) {
            return Some(i);
        }
        let domains = self.cache?.domains(key);
        let counts = vec![0; domains.len()];
        self.keys.push((key.to_string(), domains, counts));
        Some(self.keys.len() - 1)
    }

    /// Add `n` to the domain of the node in `slot` (nothing if it has no such label).
    fn add_at(&mut self, key: usize, slot: usize, n: i64) {
        let (_, domains, counts) = &mut self.keys[key];
        if let Some(c) = counts.get_mut(domains.of_slot(slot) as usize) {
            *c += n;
        }
    }

    fn add(&mut self, node: &NodeInfo, key: &str, n: i64) {
        if let Some(i) = self.key_index(key) {
            self.add_at(i, node.slot, n);
        }
    }

    /// The count of `node`'s domain of `key`.
    fn get(&self, key: &str, node: &NodeInfo) -> i64 {
        self.keys
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, domains, counts)| counts.get(domains.of_slot(node.slot) as usize))
            .copied()
            .unwrap_or(0)
    }

    /// No pair counted.
    fn is_empty(&self) -> bool {
        self.keys
            .iter()
            .all(|(_, _, counts)| counts.iter().all(|c| *c == 0))
    }
}

/// A term with its namespaces resolved (upstream `framework.AffinityTerm`). Equal terms
/// (the pods of one workload declare the same) are counted together by the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    namespaces: Set<String>,
    namespace_selector: Option<LabelSelector>,
    selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl Term {
    /// `owner` is the pod that declares the term: its namespace is the default, and its
    /// labels fill `matchLabelKeys`/`mismatchLabelKeys`.
    pub fn new(t: &PodAffinityTerm, owner: &Pod) -> Term {
        let ns = owner.metadata.namespace.clone().unwrap_or_default();
        let mut namespaces: Set<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(ns);
        }
        let mut selector = t.label_selector.clone();
        let own = labels_of(&owner.metadata);
        let mut extra = Vec::new();
        for (keys, op) in [
            (&t.match_label_keys, "In"),
            (&t.mismatch_label_keys, "NotIn"),
        ] {
            for k in keys.iter().flatten() {
                if let Some(v) = own.get(k) {
                    extra.push(LabelSelectorRequirement {
                        key: k.clone(),
                        operator: op.into(),
                        values: Some(vec![v.clone()]),
                    });
                }
            }
        }
        if let (Some(sel), false) = (selector.as_mut(), extra.is_empty()) {
            sel.match_expressions
                .get_or_insert_with(Vec::new)
                .extend(extra);
        }
        Term {
            namespaces,
            namespace_selector: t.namespace_selector.clone(),
            selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Where an index files the term: under one label its selector requires, `Some(None)`
    /// when it requires none (it may match any pod), `None` when it matches no pod.
    pub fn filing_label(&self) -> Option<Option<(&str, &str)>> {
        let sel = self.selector.as_ref()?;
        Some(
            sel.match_labels
                .iter()
                .flatten()
                .next()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    fn namespace_ok(&self, ns: &str, ns_labels: &Map<String, Labels>) -> bool {
        self.namespaces.contains(ns)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                static EMPTY: Labels = Labels::new();
                selector_matches(s, ns_labels.get(ns).unwrap_or(&EMPTY))
            })
    }

    /// The one label the selector requires, when that is all it requires.
    fn single_label(&self) -> Option<(&str, &str)> {
        crate::selectors::single_label(self.selector.as_ref()?)
    }

    /// The pods on `node` the term matches (from the node's label counts when it can).
    fn count_on(&self, node: &NodeInfo, ns_labels: &Map<String, Labels>) -> i64 {
        let Some(sel) = &self.selector else { return 0 };
        node.count_selected(sel, |ns| self.namespace_ok(ns, ns_labels), false)
            .unwrap_or_else(|| {
                node.pods
                    .iter()
                    .filter(|p| self.matches(p, ns_labels))
                    .count() as i64
            })
    }

    pub fn matches(&self, pod: &PodInfo, ns_labels: &Map<String, Labels>) -> bool {
        self.namespace_ok(pod.namespace(), ns_labels)
            && self
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, pod.labels()))
    }
}

fn terms(list: Option<&Vec<PodAffinityTerm>>, owner: &Pod) -> Vec<Term> {
    list.into_iter()
        .flatten()
        .map(|t| Term::new(t, owner))
        .collect()
}

#[derive(Debug, Clone)]
struct Weighted {
    term: Term,
    weight: i64,
}

fn weighted(
    list: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>,
    owner: &Pod,
) -> Vec<Weighted> {
    list.into_iter()
        .flatten()
        .map(|w| Weighted {
            term: Term::new(&w.pod_affinity_term, owner),
            weight: w.weight as i64,
        })
        .collect()
}

/// The terms a pod declares, parsed once per pod (`PodInfo::terms`): every scheduling cycle
/// reads the terms of every existing pod with affinity, so parsing them per cycle cost
/// O(pods) allocations per decision.
#[derive(Debug, Clone, Default)]
pub struct PodTerms {
    pub required_affinity: Vec<Term>,
    pub required_anti: Vec<Term>,
    preferred_affinity: Vec<Weighted>,
    preferred_anti: Vec<Weighted>,
}

impl PodTerms {
    pub fn of(pod: &Pod) -> PodTerms {
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        PodTerms {
            required_affinity: terms(
                pa.and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                pod,
            ),
            required_anti: terms(
                paa.and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                pod,
            ),
            preferred_affinity: weighted(
                pa.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                pod,
            ),
            preferred_anti: weighted(
                paa.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                pod,
            ),
        }
    }

    fn has_preferred(&self) -> bool {
        !self.preferred_affinity.is_empty() || !self.preferred_anti.is_empty()
    }

    /// Each preferred term that matches `other`: its weight, negative for anti-affinity.
    fn weigh_preferred(
        &self,
        other: &PodInfo,
        ns: &Map<String, Labels>,
        mut add: impl FnMut(&Term, i64),
    ) {
        for w in &self.preferred_affinity {
            if w.term.matches(other, ns) {
                add(&w.term, w.weight);
            }
        }
        for w in &self.preferred_anti {
            if w.term.matches(other, ns) {
                add(&w.term, -w.weight);
            }
        }
    }

    /// Terms that give other pods' placements a score (required anti-affinity only filters).
    pub fn scores_others(&self) -> bool {
        !self.required_affinity.is_empty() || self.has_preferred()
    }
}

/// upstream's PreFilter state: counts of matching pods per topology pair.
#[derive(Default)]
pub struct FilterState<'c> {
    /// Placed pods' distinct anti-affinity terms that match the incoming pod.
    existing_anti: Vec<&'c AntiGroup>,
    affinity: PairCounts<'c>,
    anti: PairCounts<'c>,
    required_affinity: Vec<Term>,
    required_anti: Vec<Term>,
    /// The pod matches all its own affinity terms (the first of a group may go anywhere).
    self_match: bool,
    /// No pod matches any of its affinity terms anywhere.
    no_affinity_pods: bool,
}

pub fn prefilter<'c>(pod: &PodInfo, terms: &PodTerms, cache: &'c Cache) -> FilterState<'c> {
    let mut s = FilterState {
        affinity: PairCounts::new(cache),
        anti: PairCounts::new(cache),
        ..FilterState::default()
    };
    let ns = &cache.namespaces;
    // Existing pods' required anti-affinity against the incoming pod: each distinct term
    // once; the filter looks up the node's domain in it.
    s.existing_anti = cache.anti_terms_for(pod);
    s.existing_anti.retain(|g| g.term.matches(pod, ns));
    for t in &terms.required_affinity {
        count_term(t, cache, &mut s.affinity);
    }
    for t in &terms.required_anti {
        count_term(t, cache, &mut s.anti);
    }
    s.self_match = terms.required_affinity.iter().all(|t| t.matches(pod, ns));
    s.no_affinity_pods = s.affinity.is_empty();
    s.required_affinity = terms.required_affinity.clone();
    s.required_anti = terms.required_anti.clone();
    s
}

/// The pods `t` matches, per value of its topology key. A selector of one label (most
/// are) reads the cache's index of where such pods are placed; others ask every node.
fn count_term<'c>(t: &Term, cache: &'c Cache, out: &mut PairCounts<'c>) {
    let ns = &cache.namespaces;
    let Some(key) = out.key_index(&t.topology_key) else {
        return;
    };
    if let Some((k, v)) = t.single_label() {
        for (name, n) in cache.placed_with_label(k, v, |n| t.namespace_ok(n, ns), false) {
            // A slot without a Node object has no domain: it adds nothing.
            if let Some(slot) = cache.slot_of(name) {
                out.add_at(key, slot, n);
            }
        }
        return;
    }
    for node in cache.nodes() {
        let n = t.count_on(node, ns);
        if n > 0 {
            out.add_at(key, node.slot, n);
        }
    }
}

pub fn filter(s: &FilterState<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    let labels = node.labels();
    // Affinity: every term's topology label on the node, and a matching pod in its domain.
    let mut pods_exist = true;
    for t in &s.required_affinity {
        match labels.get(&t.topology_key) {
            None => {
                return Err(Rejection::new(
                    Plugin::InterPodAffinity,
                    Code::Unresolvable,
                    REASON_AFFINITY,
                ))
            }
            Some(_) => {
                if s.affinity.get(&t.topology_key, node) <= 0 {
                    pods_exist = false;
                }
            }
        }
    }
    // The first pod of a group whose affinity names itself may go anywhere it fits.
    let first_of_group = s.no_affinity_pods && s.self_match;
    if !(pods_exist || first_of_group) {
        return Err(Rejection::new(
            Plugin::InterPodAffinity,
            Code::Unresolvable,
            REASON_AFFINITY,
        ));
    }
    // A node without the key has no domain, so no count.
    for t in &s.required_anti {
        {
            if s.anti.get(&t.topology_key, node) > 0 {
                return Err(Rejection::new(
                    Plugin::InterPodAffinity,
                    Code::Unschedulable,
                    REASON_ANTI,
                ));
            }
        }
    }
    for g in &s.existing_anti {
        if let Some(v) = labels.get(&g.term.topology_key) {
            if g.in_domain(v) > 0 {
                return Err(Rejection::new(
                    Plugin::InterPodAffinity,
                    Code::Unschedulable,
                    REASON_EXISTING_ANTI,
                ));
            }
        }
    }
    Ok(())
}

/// upstream PreScore: weights per topology pair, from both the incoming pod's preferred
/// terms and existing pods' terms that match it. None when nothing could score.
pub fn prescore<'c>(pod: &PodInfo, terms: &PodTerms, cache: &'c Cache) -> Option<PairCounts<'c>> {
    let own = terms.has_preferred();
    if !own && !cache.any_pod_scores_others() {
        return None;
    }
    let ns = &cache.namespaces;
    let mut scores = PairCounts::new(cache);
    let mut add = |node: &NodeInfo, t: &Term, w: i64| scores.add(node, &t.topology_key, w);
    for node in cache.nodes() {
        if own {
            for existing in &node.pods {
                terms.weigh_preferred(existing, ns, |t, w| add(node, t, w));
            }
        }
        // Only pods whose terms score others: with 30,000 pods placed, walking every pod for
        // the few that have such terms was most of a decision.
        for existing in &node.pods_scoring_others {
            let theirs = &existing.terms;
            for t in &theirs.required_affinity {
                if t.matches(pod, ns) {
                    add(node, t, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            theirs.weigh_preferred(pod, ns, |t, w| add(node, t, w));
        }
    }
    Some(scores)
}

pub fn score(pairs: &PairCounts<'_>, node: &NodeInfo) -> i64 {
    pairs
        .keys
        .iter()
        .filter_map(|(_, domains, counts)| counts.get(domains.of_slot(node.slot) as usize))
        .sum()
}

/// upstream's min-max normalisation (scores may be negative).
pub fn normalize(scores: &mut [i64]) {
    let (min, max) = (
        scores.iter().copied().min().unwrap_or(0),
        scores.iter().copied().max().unwrap_or(0),
    );
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            super::MAX_NODE_SCORE * (*s - min) / diff
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache, info};
    use serde_json::json;

    fn three_zones() -> Cache {
        cache(&[
            ("n1", json!({"zone": "a", "kubernetes.io/hostname": "n1"})),
            ("n2", json!({"zone": "a", "kubernetes.io/hostname": "n2"})),
            ("n3", json!({"zone": "b", "kubernetes.io/hostname": "n3"})),
        ])
    }

    fn run(c: &Cache, pod: serde_json::Value) -> Vec<Result<(), Rejection>> {
        let p = info(pod);
        let terms = PodTerms::of(&p.pod);
        let s = prefilter(&p, &terms, c);
        c.nodes().map(|n| filter(&s, n)).collect()
    }

    #[test]
    fn required_affinity_follows_the_domain_and_the_first_pod_goes_anywhere() {
        let mut c = three_zones();
        let aff = json!({"metadata": {"name": "w", "uid": "w", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}});
        // No db pod anywhere, and the pod is not a db itself: nowhere.
        assert!(run(&c, aff.clone())
            .iter()
            .all(|r| r.as_ref().unwrap_err().reason_list() == vec![REASON_AFFINITY]));
        c.assume(info(json!({"metadata": {"name": "db", "uid": "db", "namespace": "d", "labels": {"app": "db"}}, "spec": {"containers": []}})), "n3");
        let r = run(&c, aff);
        assert!(r[0].is_err() && r[1].is_err() && r[2].is_ok());
        // A pod whose affinity names itself may start the group anywhere.
        let c2 = three_zones();
        let selfish = json!({"metadata": {"name": "s", "uid": "s", "namespace": "d", "labels": {"app": "db"}},
            "spec": {"containers": [], "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}});
        assert!(run(&c2, selfish).iter().all(Result::is_ok));
    }

    #[test]
    fn anti_affinity_both_ways_and_namespaces() {
        let mut c = three_zones();
        c.assume(info(json!({"metadata": {"name": "a", "uid": "a", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}})), "n1");
        // A plain web pod: the existing pod's anti-affinity keeps it off n1.
        let r = run(
            &c,
            json!({"metadata": {"name": "b", "uid": "b", "namespace": "d", "labels": {"app": "web"}}, "spec": {"containers": []}}),
        );
        assert_eq!(
            r[0].as_ref().unwrap_err().reason_list(),
            vec![REASON_EXISTING_ANTI]
        );
        assert!(r[1].is_ok() && r[2].is_ok());
        // The same pod in another namespace is not matched by the default namespace.
        let r = run(
            &c,
            json!({"metadata": {"name": "b", "uid": "b", "namespace": "other", "labels": {"app": "web"}}, "spec": {"containers": []}}),
        );
        assert!(r.iter().all(Result::is_ok));
        // Incoming anti-affinity by zone: n1 and n2 share zone a.
        let r = run(
            &c,
            json!({"metadata": {"name": "x", "uid": "x", "namespace": "d"}, "spec": {"containers": [],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone", "namespaceSelector": {}}]}}}}),
        );
        assert_eq!(r[1].as_ref().unwrap_err().reason_list(), vec![REASON_ANTI]);
        assert!(r[2].is_ok());
    }

    #[test]
    fn existing_anti_terms_follow_node_labels_and_count_each_pod() {
        let mut c = three_zones();
        let anti = |name: &str| {
            info(
                json!({"metadata": {"name": name, "uid": name, "namespace": "d", "labels": {"app": "db"}},
                "spec": {"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}}),
            )
        };
        let web = json!({"metadata": {"name": "p", "uid": "p", "namespace": "d", "labels": {"app": "web"}}, "spec": {"containers": []}});
        let refused =
            |r: Vec<Result<(), Rejection>>| -> Vec<bool> { r.iter().map(Result::is_err).collect() };
        // Two pods with the same term on n1 (zone a): one counted group, two pods.
        c.assume(anti("d1"), "n1");
        c.assume(anti("d2"), "n1");
        assert_eq!(c.anti_terms_for(&info(web.clone())).len(), 1);
        assert_eq!(refused(run(&c, web.clone())), vec![true, true, false]);
        // n1 moves to zone b: the pods' domain moves with it.
        c.upsert_node(crate::plugins::testing::node(json!({"metadata": {"name": "n1", "labels": {"zone": "b", "kubernetes.io/hostname": "n1"}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})));
        assert_eq!(refused(run(&c, web.clone())), vec![true, false, true]);
        // One of the two leaves: the other still refuses zone b.
        c.forget("d1");
        assert_eq!(refused(run(&c, web.clone())), vec![true, false, true]);
        // The node goes (its pod stays bound there): it is in no domain.
        c.remove_node("n1");
        assert_eq!(refused(run(&c, web.clone())), vec![false, false]);
        c.forget("d2");
        assert!(c.anti_terms_for(&info(web)).is_empty());
    }

    #[test]
    fn existing_anti_terms_of_every_selector_shape_are_found_and_released() {
        let mut c = three_zones();
        let anti = |name: &str, sel: serde_json::Value| {
            info(
                json!({"metadata": {"name": name, "uid": name, "namespace": "d"},
                "spec": {"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": sel, "topologyKey": "kubernetes.io/hostname"}]}}}}),
            )
        };
        // Filed under its first label, the second must match too.
        c.assume(
            anti(
                "two",
                json!({"matchLabels": {"app": "web", "tier": "front"}}),
            ),
            "n1",
        );
        // No label to file it under: checked for every pod.
        c.assume(
            anti(
                "expr",
                json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
            ),
            "n2",
        );
        // An empty selector matches every pod in the namespace.
        c.assume(anti("all", json!({})), "n3");
        let incoming = |labels: serde_json::Value| json!({"metadata": {"name": "p", "uid": "p", "namespace": "d", "labels": labels}, "spec": {"containers": []}});
        let refused =
            |r: Vec<Result<(), Rejection>>| -> Vec<bool> { r.iter().map(Result::is_err).collect() };
        assert_eq!(
            refused(run(&c, incoming(json!({"app": "web"})))),
            vec![false, false, true]
        );
        assert_eq!(
            refused(run(
                &c,
                incoming(json!({"app": "web", "tier": "front", "team": "a"}))
            )),
            vec![true, true, true]
        );
        c.forget("all");
        c.forget("two");
        assert_eq!(
            refused(run(
                &c,
                incoming(json!({"app": "web", "tier": "front", "team": "a"}))
            )),
            vec![false, true, false]
        );
        c.forget("expr");
        assert!(c
            .anti_terms_for(&info(incoming(json!({"team": "a"}))))
            .is_empty());
    }

    #[test]
    fn preferred_terms_score_by_domain() {
        let mut c = three_zones();
        c.assume(info(json!({"metadata": {"name": "db", "uid": "db", "namespace": "d", "labels": {"app": "db"}}, "spec": {"containers": []}})), "n3");
        let p = info(
            json!({"metadata": {"name": "w", "uid": "w", "namespace": "d"}, "spec": {"containers": [], "affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}}),
        );
        let pairs = prescore(&p, &PodTerms::of(&p.pod), &c).unwrap();
        let mut s: Vec<i64> = c.nodes().map(|n| score(&pairs, n)).collect();
        assert_eq!(s, vec![0, 0, 50]);
        normalize(&mut s);
        assert_eq!(s, vec![0, 0, 100]);
    }

    #[test]
    fn existing_pods_terms_score_an_incoming_pod_with_none_of_its_own() {
        let mut c = three_zones();
        let w = info(
            json!({"metadata": {"name": "w", "uid": "w", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": []}}),
        );
        // Required anti-affinity only filters: nothing to score.
        c.assume(info(json!({"metadata": {"name": "a", "uid": "a", "namespace": "d"}, "spec": {"containers": [], "affinity": {
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}})), "n1");
        assert!(prescore(&w, &PodTerms::of(&w.pod), &c).is_none());
        // A placed pod's required affinity (hard weight 1) and preferred anti-affinity (-20).
        c.assume(info(json!({"metadata": {"name": "b", "uid": "b", "namespace": "d"}, "spec": {"containers": [], "affinity": {
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 20,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}}]}}}})), "n2");
        let pairs = prescore(&w, &PodTerms::of(&w.pod), &c).expect("scores");
        let s: Vec<i64> = c.nodes().map(|n| score(&pairs, n)).collect();
        // By domain: n1 and n2 share zone a.
        assert_eq!(s, vec![-19, -19, 0]);
        // Gone again: nothing scores.
        c.remove_pod("b");
        assert!(prescore(&w, &PodTerms::of(&w.pod), &c).is_none());
    }
}
