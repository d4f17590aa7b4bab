//! The scheduler's view of the cluster: nodes with per-node aggregates (requested resources,
//! host ports, pods with affinity) kept up to date as pods are placed, assumed or removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use crate::plugins::inter_pod_affinity::{PodTerms, Term};
use crate::resources::{self, Resources};
use crate::selectors::Labels;

/// A host port a pod occupies: ip ("0.0.0.0" when unset), protocol, port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// upstream `HostPortInfo.CheckConflict`: 0.0.0.0 conflicts with every ip.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// The scheduler's maps and sets: looked up several times per node in every decision, with
/// keys of a few bytes (node names, label keys and values, namespaces), where SipHash cost
/// more than the lookups themselves. foldhash is seeded per process.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// A pod with what the scheduler computes from it once.
#[derive(Debug)]
pub struct PodInfo {
    /// The whole pod while it is a decision's subject (pending, assumed); once the watch
    /// shows it placed, a shared empty pod: `meta` and `start_time` are what is read of it.
    pub pod: Arc<Pod>,
    pub name: Box<str>,
    pub namespace: Box<str>,
    pub resource_version: Option<Box<str>>,
    /// It has a deletionTimestamp.
    pub terminating: bool,
    /// Shared with every pod whose labels are the same (a workload's replicas): a label map
    /// is ~600 B per pod even with one label, and the cache holds every placed pod.
    labels: Arc<Labels>,
    pub start_time: Option<Time>,
    pub uid: String,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub priority: i32,
    pub host_ports: Vec<HostPort>,
    pub has_affinity: bool,
    pub has_required_anti_affinity: bool,
    /// Its inter-pod (anti-)affinity terms, parsed once (empty without affinity).
    pub terms: PodTerms,
}

pub fn pod_key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// A pod's spec, or the empty one (read without copying: a spec is many allocations).
pub fn spec_of(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    static EMPTY: std::sync::LazyLock<k8s_openapi::api::core::v1::PodSpec> =
        std::sync::LazyLock::new(Default::default);
    pod.spec.as_ref().unwrap_or(&EMPTY)
}

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let spec = spec_of(&pod);
        let mut host_ports = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                    host_ports.push(HostPort {
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: hp,
                    });
                }
            }
        }
        let aff = spec.affinity.as_ref();
        let has_affinity =
            aff.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let m = &pod.metadata;
        PodInfo {
            name: m.name.as_deref().unwrap_or("").into(),
            namespace: m.namespace.as_deref().unwrap_or("").into(),
            resource_version: m.resource_version.as_deref().map(Into::into),
            terminating: m.deletion_timestamp.is_some(),
            labels: intern_labels(m.labels.as_ref()),
            start_time: pod.status.as_ref().and_then(|s| s.start_time.clone()),
            uid: pod_key(&pod),
            requests: resources::pod_requests(spec),
            non_zero: resources::pod_non_zero_requests(spec),
            priority: pod_priority(&pod),
            host_ports,
            has_affinity,
            has_required_anti_affinity: aff
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .is_some_and(|t| !t.is_empty()),
            terms: if has_affinity {
                PodTerms::of(&pod)
            } else {
                PodTerms::default()
            },
            pod,
        }
    }

    /// A pod the watch shows placed: what placement reads of it is computed here and its
    /// metadata kept; the pod itself goes. A placed pod is never a decision's subject
    /// again, and a k8s-openapi `Pod` is 2.2 KB inline before any field is set (its
    /// containers 2.1 KB each more); tens of thousands are held.
    pub fn placed(pod: Arc<Pod>) -> PodInfo {
        // A shared placeholder: no allocation per placed pod.
        static HOLE: std::sync::LazyLock<Arc<Pod>> = std::sync::LazyLock::new(Default::default);
        let mut info = PodInfo::new(pod);
        info.pod = HOLE.clone();
        info
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// What addresses the pod in a write (an eviction): name, namespace, uid, version.
    pub fn object_meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: Some(self.namespace.to_string()),
            // `uid` is the namespace/name when the pod had none (tests' pods).
            uid: (!self.uid.contains('/')).then(|| self.uid.clone()),
            resource_version: self.resource_version.as_deref().map(String::from),
            ..ObjectMeta::default()
        }
    }
}

/// The one shared copy of a label map. Entries no pod holds any more are dropped whenever
/// the table has doubled since the last such sweep, so it stays within twice what is used.
fn intern_labels(labels: Option<&Labels>) -> Arc<Labels> {
    struct Table {
        maps: HashSet<Arc<Labels>>,
        sweep_at: usize,
    }
    static EMPTY: std::sync::LazyLock<Arc<Labels>> = std::sync::LazyLock::new(Default::default);
    static TABLE: std::sync::LazyLock<std::sync::Mutex<Table>> = std::sync::LazyLock::new(|| {
        std::sync::Mutex::new(Table {
            maps: Default::default(),
            sweep_at: 1024,
        })
    });
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        return EMPTY.clone();
    };
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = t.maps.get(labels) {
        return shared.clone();
    }
    if t.maps.len() >= t.sweep_at {
        t.maps.retain(|m| Arc::strong_count(m) > 1);
        t.sweep_at = (t.maps.len() * 2).max(1024);
    }
    let shared = Arc::new(labels.clone());
    t.maps.insert(shared.clone());
    shared
}

/// One node and the pods placed (or assumed) on it, with their sums.
#[derive(Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// Its position in `Cache::node_slots` (a what-if copy keeps the original's): domain
    /// tables are indexed by it.
    pub slot: usize,
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero: (i64, i64),
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    /// Pods whose terms score others (required affinity, preferred terms): the ones
    /// InterPodAffinity's PreScore reads on every decision.
    pub pods_scoring_others: Vec<Arc<PodInfo>>,
    /// How many of the pods carry each label: key → value → namespace → counts. Spread
    /// and affinity count the pods a selector matches on every node for every pod they
    /// place; a selector of one label (most are) is answered here without a scan.
    pod_labels: LabelIndex<LabelCount>,
}

/// Pods with one label in one namespace, and how many of them are terminating.
#[derive(Debug, Default, Clone, Copy)]
pub struct LabelCount {
    pub all: u32,
    pub terminating: u32,
}

impl LabelCount {
    fn count(&mut self, terminating: bool, add: bool) {
        let t = terminating as u32;
        if add {
            self.all += 1;
            self.terminating += t;
        } else {
            self.all = self.all.saturating_sub(1);
            self.terminating = self.terminating.saturating_sub(t);
        }
    }
}

/// Label key → value → namespace → `T`: the cache's per-node and cluster-wide label counts.
type LabelIndex<T> = Map<String, Map<String, Map<String, T>>>;

/// Apply `change` to `index[key][value][namespace]` (created first when `add`; untouched
/// and absent otherwise), then drop it, and every level it leaves empty, when `empty`.
fn update_label_slot<T: Default>(
    index: &mut LabelIndex<T>,
    (k, v, ns): (&String, &String, &str),
    add: bool,
    change: impl FnOnce(&mut T),
    empty: impl Fn(&T) -> bool,
) {
    let values = match index.get_mut(k.as_str()) {
        Some(m) => m,
        None if add => index.entry(k.clone()).or_default(),
        None => return,
    };
    let namespaces = match values.get_mut(v.as_str()) {
        Some(m) => m,
        None if add => values.entry(v.clone()).or_default(),
        None => return,
    };
    let slot = match namespaces.get_mut(ns) {
        Some(c) => c,
        None if add => namespaces.entry(ns.to_string()).or_default(),
        None => return,
    };
    change(slot);
    if empty(slot) {
        namespaces.remove(ns);
        if namespaces.is_empty() {
            values.remove(v.as_str());
            if values.is_empty() {
                index.remove(k.as_str());
            }
        }
    }
}

impl NodeInfo {
    /// A copy of `node` holding only the pods `keep` accepts (preemption's what-if).
    pub fn with_pods_where(&self, keep: impl Fn(&PodInfo) -> bool) -> NodeInfo {
        let mut n = NodeInfo {
            slot: self.slot,
            node: self.node.clone(),
            allocatable: self.allocatable.clone(),
            ..NodeInfo::default()
        };
        for p in self.pods.iter().filter(|p| keep(p)) {
            n.add_pod(p.clone());
        }
        n
    }

    pub fn add_pod_for_whatif(&mut self, p: Arc<PodInfo>) {
        self.add_pod(p);
    }

    fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero.0 += p.non_zero.0;
        self.non_zero.1 += p.non_zero.1;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if p.has_required_anti_affinity {
            self.pods_with_required_anti_affinity.push(p.clone());
        }
        if p.terms.scores_others() {
            self.pods_scoring_others.push(p.clone());
        }
        self.count_labels(&p, true);
        self.pods.push(p);
    }

    fn count_labels(&mut self, p: &PodInfo, add: bool) {
        let terminating = p.terminating;
        let ns = p.namespace();
        for (k, v) in p.labels() {
            update_label_slot(
                &mut self.pod_labels,
                (k, v, ns),
                add,
                |c| c.count(terminating, add),
                |c| c.all == 0,
            );
        }
    }

    /// The pods `sel` matches in the namespaces `ns` accepts (without terminating pods
    /// when `live_only`), from the label counts; None when the selector needs a scan.
    /// A selector of several labels is 0 at once when one of them is on no pod.
    pub fn count_selected(
        &self,
        sel: &LabelSelector,
        ns: impl Fn(&str) -> bool,
        live_only: bool,
    ) -> Option<i64> {
        let labels = crate::selectors::labels_only(sel)?;
        let count = |k: &str, v: &str| -> i64 {
            self.pod_labels
                .get(k)
                .and_then(|m| m.get(v))
                .map(|m| {
                    m.iter()
                        .filter(|(n, _)| ns(n))
                        .map(|(_, c)| {
                            (if live_only {
                                c.all.saturating_sub(c.terminating)
                            } else {
                                c.all
                            }) as i64
                        })
                        .sum()
                })
                .unwrap_or(0)
        };
        let mut it = labels.iter();
        let (k, v) = it.next()?;
        let first = count(k, v);
        if labels.len() == 1 || first == 0 {
            return Some(first);
        }
        if it.any(|(k, v)| count(k, v) == 0) {
            return Some(0);
        }
        None
    }

    fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero.0 -= p.non_zero.0;
        self.non_zero.1 -= p.non_zero.1;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_required_anti_affinity
            .retain(|q| q.uid != uid);
        if p.terms.scores_others() {
            self.pods_scoring_others.retain(|q| q.uid != uid);
        }
        self.count_labels(&p, false);
        Some(p)
    }

    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or("")
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node
            .as_ref()
            .map(|n| crate::selectors::labels_of(&n.metadata))
            .unwrap_or(&EMPTY)
    }
}

#[derive(Debug)]
struct PodEntry {
    node: String,
    assumed: bool,
    info: Arc<PodInfo>,
}

/// What changed about a node, for deciding which waiting pods might now fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeChange {
    pub added: bool,
    pub labels: bool,
    pub taints: bool,
    pub allocatable: bool,
    pub unschedulable: bool,
}

impl NodeChange {
    pub fn any(&self) -> bool {
        self.added || self.labels || self.taints || self.allocatable || self.unschedulable
    }
}

#[derive(Debug, Default)]
pub struct Cache {
    /// Every node known, sorted by name: those that exist (have a Node object) and those
    /// gone with pods still bound there. A cycle walks them all several times (prefilters,
    /// filters); a walk of a vector, not a lookup per name, keeps that off the profile.
    nodes: Vec<NodeInfo>,
    /// Each name's position in `nodes`.
    positions: Map<String, usize>,
    /// How many of `nodes` exist.
    existing: usize,
    pods: Map<String, PodEntry>,
    /// Namespace labels, for affinity terms' `namespaceSelector`.
    pub namespaces: Map<String, BTreeMap<String, String>>,
    anti_terms: AntiTerms,
    /// Bumped whenever a node slot moves or a node's labels (or existence) change: the
    /// domain tables of an older generation are rebuilt when next asked for.
    generation: u64,
    domain_tables: std::sync::Mutex<DomainTables>,
    /// Placed pods whose terms score others (see `NodeInfo::pods_scoring_others`).
    pods_scoring_others: usize,
    /// Where the placed pods carrying each label are: key → value → namespace → node →
    /// pods. A required (anti-)affinity term of one label counts the nodes holding
    /// matching pods from here instead of asking each of the cluster's nodes.
    placed_by_label: LabelIndex<NodeCounts>,
}

/// Pods with one label in one namespace, per node name.
type NodeCounts = Map<String, LabelCount>;

/// The placed pods declaring one distinct required anti-affinity term (the pods of a
/// workload declare the same one): how many on each node, and in each domain of the
/// term's topology key among the nodes that exist. An incoming pod asks each distinct term
/// once whether it matches and refuses a node by one lookup of its domain, where a pass
/// over every pod declaring the term cost a thousand steps per decision for a group that
/// size.
#[derive(Debug)]
pub struct AntiGroup {
    pub term: Term,
    nodes: Map<String, u32>,
    domains: Map<String, u32>,
}

impl AntiGroup {
    /// Pods declaring the term in the domain `value` of its topology key.
    pub fn in_domain(&self, value: &str) -> u32 {
        self.domains.get(value).copied().unwrap_or(0)
    }
}

fn count_in(map: &mut Map<String, u32>, key: &str, n: u32, add: bool) {
    if add {
        match map.get_mut(key) {
            Some(c) => *c += n,
            None => {
                map.insert(key.to_string(), n);
            }
        }
    } else if let Some(c) = map.get_mut(key) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            map.remove(key);
        }
    }
}

/// The distinct required anti-affinity terms of placed pods, each filed under one label
/// its selector requires (key → value), or with the rest when it requires none. Every pod
/// placed is checked against these terms; its own labels find the few that can match it.
#[derive(Debug, Default)]
struct AntiTerms {
    by_label: Map<String, Map<String, Vec<AntiGroup>>>,
    other: Vec<AntiGroup>,
}

impl AntiTerms {
    fn slot(&mut self, label: Option<(&str, &str)>) -> &mut Vec<AntiGroup> {
        match label {
            Some((k, v)) => self
                .by_label
                .entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default(),
            None => &mut self.other,
        }
    }

    /// Count (or uncount) `info`'s terms on `node`, whose labels are `labels` when it exists.
    fn count(&mut self, info: &PodInfo, node: &str, labels: Option<&Labels>, add: bool) {
        for t in &info.terms.required_anti {
            let Some(label) = t.filing_label() else {
                continue;
            };
            let groups = if add {
                self.slot(label)
            } else {
                match label {
                    Some((k, v)) => match self.by_label.get_mut(k).and_then(|m| m.get_mut(v)) {
                        Some(g) => g,
                        None => continue,
                    },
                    None => &mut self.other,
                }
            };
            let i = match groups.iter().position(|g| g.term == *t) {
                Some(i) => i,
                None if add => {
                    groups.push(AntiGroup {
                        term: t.clone(),
                        nodes: Map::default(),
                        domains: Map::default(),
                    });
                    groups.len() - 1
                }
                None => continue,
            };
            let g = &mut groups[i];
            count_in(&mut g.nodes, node, 1, add);
            if let Some(v) = labels.and_then(|l| l.get(&t.topology_key)) {
                count_in(&mut g.domains, v, 1, add);
            }
            if g.nodes.is_empty() {
                groups.swap_remove(i);
                if let (true, Some((k, v))) = (groups.is_empty(), label) {
                    if let Some(values) = self.by_label.get_mut(k) {
                        values.remove(v);
                        if values.is_empty() {
                            self.by_label.remove(k);
                        }
                    }
                }
            }
        }
    }

    /// A node appeared, went, or changed labels: its pods move between domains.
    fn relabel(&mut self, node: &str, old: Option<&Labels>, new: Option<&Labels>) {
        let groups = self
            .by_label
            .values_mut()
            .flat_map(|m| m.values_mut())
            .flatten()
            .chain(self.other.iter_mut());
        for g in groups {
            let Some(&n) = g.nodes.get(node) else {
                continue;
            };
            if let Some(v) = old.and_then(|l| l.get(&g.term.topology_key)) {
                count_in(&mut g.domains, v, n, false);
            }
            if let Some(v) = new.and_then(|l| l.get(&g.term.topology_key)) {
                count_in(&mut g.domains, v, n, true);
            }
        }
    }
}

/// The labels of node `name` if it exists (`Cache::node`, borrowing only what it reads).
fn existing_labels<'a>(
    positions: &Map<String, usize>,
    nodes: &'a [NodeInfo],
    name: &str,
) -> Option<&'a Labels> {
    let n = nodes.get(*positions.get(name)?)?;
    n.node.as_ref().map(|_| n.labels())
}

/// The domains of one topology key, numbered: each node slot's domain, so that a spread
/// constraint counts into a vector indexed by domain instead of hashing a label value per
/// node per decision.
#[derive(Debug, Default)]
pub struct KeyDomains {
    /// Per slot of `Cache::node_slots`: the domain of the node there, or `NO_DOMAIN` (no
    /// such label, or no Node object).
    slot_domain: Vec<u32>,
    by_value: Map<String, u32>,
}

pub const NO_DOMAIN: u32 = u32::MAX;

impl KeyDomains {
    /// How many distinct values the existing nodes have.
    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    /// The domain of the node in slot `slot`.
    pub fn of_slot(&self, slot: usize) -> u32 {
        self.slot_domain.get(slot).copied().unwrap_or(NO_DOMAIN)
    }

    /// The domain numbered for `value`.
    pub fn of_value(&self, value: &str) -> Option<u32> {
        self.by_value.get(value).copied()
    }
}

/// Domain tables built on demand, valid while `generation` is the cache's.
#[derive(Debug, Default)]
struct DomainTables {
    generation: u64,
    by_key: Map<String, Arc<KeyDomains>>,
}

impl Cache {
    /// Every node known, sorted by name, including those gone with pods still bound (`node`
    /// is None): a cycle walks this from a rotating start.
    pub fn node_slots(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.positions
            .get(name)
            .map(|&i| &self.nodes[i])
            .filter(|n| n.node.is_some())
    }

    /// The nodes that exist, sorted by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.node.is_some())
    }

    /// The entry for `name`, made (in name order) if there is none.
    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        if let Some(&i) = self.positions.get(name) {
            return &mut self.nodes[i];
        }
        let at = self.nodes.partition_point(|n| n.name.as_str() < name);
        self.nodes.insert(
            at,
            NodeInfo {
                name: name.to_string(),
                slot: at,
                ..NodeInfo::default()
            },
        );
        self.positions.insert(name.to_string(), at);
        self.renumber(at + 1);
        self.generation += 1;
        &mut self.nodes[at]
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = *self.positions.get(name)?;
        Some(&mut self.nodes[i])
    }

    fn remove_slot(&mut self, name: &str) {
        if let Some(i) = self.positions.remove(name) {
            self.nodes.remove(i);
            self.renumber(i);
            self.generation += 1;
        }
    }

    /// Positions from `from` on moved (nodes come and go rarely; most arrive in name order).
    fn renumber(&mut self, from: usize) {
        for (i, n) in self.nodes.iter_mut().enumerate().skip(from) {
            n.slot = i;
            if let Some(p) = self.positions.get_mut(n.name.as_str()) {
                *p = i;
            }
        }
    }

    /// Whether any placed pod has terms that score others.
    pub fn any_pod_scores_others(&self) -> bool {
        self.pods_scoring_others > 0
    }

    pub fn node_count(&self) -> usize {
        self.existing
    }

    /// The distinct required anti-affinity terms of placed pods that may match `pod` (a
    /// superset: each must still be matched), each once.
    pub fn anti_terms_for<'a>(&'a self, pod: &PodInfo) -> Vec<&'a AntiGroup> {
        pod.labels()
            .iter()
            .filter_map(|(k, v)| self.anti_terms.by_label.get(k)?.get(v))
            .flatten()
            .chain(&self.anti_terms.other)
            .collect()
    }

    /// The position of node `name` in `node_slots`.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// The domains of topology key `key` over the existing nodes, numbered (built when
    /// first asked for after a node came, went, moved or changed labels).
    pub fn domains(&self, key: &str) -> Arc<KeyDomains> {
        let mut tables = self
            .domain_tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tables.generation != self.generation {
            tables.generation = self.generation;
            tables.by_key.clear();
        }
        if let Some(d) = tables.by_key.get(key) {
            return d.clone();
        }
        let mut d = KeyDomains {
            slot_domain: Vec::with_capacity(self.nodes.len()),
            by_value: Map::default(),
        };
        for n in &self.nodes {
            let id = match n.node.as_ref().and_then(|_| n.labels().get(key)) {
                Some(v) => {
                    let next = d.by_value.len() as u32;
                    *d.by_value.entry(v.clone()).or_insert(next)
                }
                None => NO_DOMAIN,
            };
            d.slot_domain.push(id);
        }
        let d = Arc::new(d);
        tables.by_key.insert(key.to_string(), d.clone());
        d
    }

    /// The nodes holding placed pods with label `key=value` in a namespace `ns_ok`
    /// accepts, and how many such pods each holds (without terminating ones when
    /// `live_only`). Nodes without a Node object may be named: callers look them up.
    pub fn placed_with_label(
        &self,
        key: &str,
        value: &str,
        ns_ok: impl Fn(&str) -> bool,
        live_only: bool,
    ) -> Vec<(&str, i64)> {
        let Some(namespaces) = self.placed_by_label.get(key).and_then(|m| m.get(value)) else {
            return Vec::new();
        };
        namespaces
            .iter()
            .filter(|(ns, _)| ns_ok(ns))
            .flat_map(|(_, nodes)| {
                nodes.iter().filter_map(move |(n, c)| {
                    let count = if live_only {
                        c.all.saturating_sub(c.terminating)
                    } else {
                        c.all
                    };
                    (count > 0).then_some((n.as_str(), count as i64))
                })
            })
            .collect()
    }

    fn index_labels(&mut self, p: &PodInfo, node: &str, add: bool) {
        let ns = p.namespace();
        let terminating = p.terminating;
        for (k, v) in p.labels() {
            update_label_slot(
                &mut self.placed_by_label,
                (k, v, ns),
                add,
                |nodes| {
                    let c = match nodes.get_mut(node) {
                        Some(c) => c,
                        None if add => nodes.entry(node.to_string()).or_default(),
                        None => return,
                    };
                    c.count(terminating, add);
                    if c.all == 0 {
                        nodes.remove(node);
                    }
                },
                |nodes| nodes.is_empty(),
            );
        }
    }

    /// Add or replace a node; says what changed that could let a waiting pod fit.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.slot(&name);
        let change = match &info.node {
            None => NodeChange {
                added: true,
                ..NodeChange::default()
            },
            Some(old) => {
                let spec = |n: &Node| n.spec.clone().unwrap_or_default();
                let (os, ns) = (spec(old), spec(&node));
                NodeChange {
                    added: false,
                    labels: old.metadata.labels != node.metadata.labels,
                    taints: os.taints != ns.taints,
                    allocatable: resources::node_allocatable(old)
                        != resources::node_allocatable(&node),
                    unschedulable: os.unschedulable != ns.unschedulable,
                }
            }
        };
        info.allocatable = resources::node_allocatable(&node);
        let was_new = info.node.is_none();
        let old = info.node.replace(node.clone());
        if was_new {
            self.existing += 1;
        }
        if change.added || change.labels {
            self.generation += 1;
            self.anti_terms.relabel(
                &name,
                old.as_ref()
                    .map(|n| crate::selectors::labels_of(&n.metadata)),
                Some(crate::selectors::labels_of(&node.metadata)),
            );
        }
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(info) = self.slot_mut(name) else {
            return;
        };
        let (old, unused) = (info.node.take(), info.pods.is_empty());
        if let Some(old) = old {
            self.existing -= 1;
            self.generation += 1;
            self.anti_terms
                .relabel(name, Some(crate::selectors::labels_of(&old.metadata)), None);
        }
        // Pods still bound there keep their entry until they are deleted (as upstream).
        if unused {
            self.remove_slot(name);
        }
    }

    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|e| e.assumed)
    }

    pub fn pod_node(&self, uid: &str) -> Option<&str> {
        self.pods.get(uid).map(|e| e.node.as_str())
    }

    /// A pod seen bound to `node` by the watch: add, replace, or confirm an assumption.
    /// Returns whether its labels or placement are new (affinity/spread may now match).
    pub fn add_or_update_bound(&mut self, pod: Arc<Pod>, node: &str) -> bool {
        let info = Arc::new(PodInfo::placed(pod));
        let uid = info.uid.clone();
        let mut changed = true;
        if let Some(old) = self.pods.remove(&uid) {
            changed = old.node != node || old.info.labels() != info.labels();
            self.detach(&uid, &old.node);
        }
        self.attach(info.clone(), node);
        self.pods.insert(
            uid,
            PodEntry {
                node: node.to_string(),
                assumed: false,
                info,
            },
        );
        changed
    }

    /// The scheduler decided: count the pod on `node` before the API says so.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: &str) {
        let uid = info.uid.clone();
        if let Some(old) = self.pods.remove(&uid) {
            self.detach(&uid, &old.node);
        }
        self.attach(info.clone(), node);
        self.pods.insert(
            uid,
            PodEntry {
                node: node.to_string(),
                assumed: true,
                info,
            },
        );
    }

    /// A bind failed: undo the assumption (only if it is still an assumption).
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|e| e.assumed) {
            self.remove_pod(uid);
        }
    }

    /// The pod is gone (deleted or finished): free what it held. True if it was counted.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        match self.pods.remove(uid) {
            Some(e) => {
                self.detach(uid, &e.node);
                true
            }
            None => false,
        }
    }

    fn attach(&mut self, info: Arc<PodInfo>, node: &str) {
        if info.terms.scores_others() {
            self.pods_scoring_others += 1;
        }
        if info.has_required_anti_affinity {
            let labels = existing_labels(&self.positions, &self.nodes, node);
            self.anti_terms.count(&info, node, labels, true);
        }
        self.index_labels(&info, node, true);
        self.slot(node).add_pod(info);
    }

    fn detach(&mut self, uid: &str, node: &str) {
        let Some(n) = self.slot_mut(node) else {
            return;
        };
        let removed = n.remove_pod(uid);
        if n.node.is_none() && n.pods.is_empty() {
            self.remove_slot(node);
        }
        if let Some(p) = removed {
            if p.terms.scores_others() {
                self.pods_scoring_others -= 1;
            }
            if p.has_required_anti_affinity {
                let labels = existing_labels(&self.positions, &self.nodes, node);
                self.anti_terms.count(&p, node, labels, false);
            }
            self.index_labels(&p, node, false);
        }
    }

    /// Uids of every pod the cache counts (for reconciling after a relist).
    pub fn pod_uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, cpu: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": uid, "namespace": "d", "uid": uid},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                    "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
            }))
            .unwrap(),
        )
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}))
            .unwrap(),
        )
    }

    #[test]
    fn assume_confirm_forget_and_remove_keep_sums_right() {
        let mut c = Cache::default();
        assert!(c.upsert_node(node("n1")).added);
        assert!(!c.upsert_node(node("n1")).any());
        c.assume(Arc::new(PodInfo::new(pod("a", "500m"))), "n1");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 500);
        assert!(c.is_assumed("a"));
        c.add_or_update_bound(pod("a", "500m"), "n1");
        assert!(!c.is_assumed("a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 500);
        // The placed pod is held as its metadata; what its containers ask is still counted.
        let placed = &c.node("n1").unwrap().pods[0];
        assert!(spec_of(&placed.pod).containers.is_empty());
        assert!(placed.pod.metadata.name.is_none());
        assert_eq!((placed.name(), placed.uid.as_str()), ("a", "a"));
        assert_eq!(placed.requests.milli_cpu, 500);
        assert_eq!(placed.host_ports.len(), 1);
        // forget only undoes assumptions.
        c.forget("a");
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
        c.assume(Arc::new(PodInfo::new(pod("b", "1"))), "n1");
        c.forget("b");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 500);
        assert_eq!(c.node("n1").unwrap().used_ports.len(), 1);
        assert!(c.remove_pod("a"));
        let n = c.node("n1").unwrap();
        assert_eq!(
            (n.requested.milli_cpu, n.used_ports.len(), n.pods.len()),
            (0, 0, 0)
        );
        // A pod bound to a node the cache has not seen yet waits there for it.
        c.add_or_update_bound(pod("x", "1"), "later");
        assert!(c.node("later").is_none());
        c.upsert_node(node("later"));
        assert_eq!(c.node("later").unwrap().requested.milli_cpu, 1000);
        let names: Vec<&str> = c.nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["later", "n1"]);
        c.remove_node("later");
        assert!(c.node("later").is_none());
        assert_eq!(c.node("n1").unwrap().name, "n1");
        assert_eq!(c.node_count(), 1);
        // Its pod still counts there until it goes.
        assert_eq!(c.node_slots().len(), 2);
    }

    #[test]
    fn label_counts_answer_one_label_selectors_and_follow_removal() {
        let labelled = |name: &str, ns: &str, labels: serde_json::Value, deleting: bool| {
            let mut v = json!({"metadata": {"name": name, "uid": name, "namespace": ns, "labels": labels},
                "spec": {"containers": []}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            Arc::new(PodInfo::new(Arc::new(serde_json::from_value(v).unwrap())))
        };
        let mut c = Cache::default();
        c.upsert_node(node("n1"));
        c.assume(
            labelled("a", "d", json!({"app": "web", "tier": "x"}), false),
            "n1",
        );
        c.assume(labelled("b", "d", json!({"app": "web"}), true), "n1");
        c.assume(labelled("c", "e", json!({"app": "web"}), false), "n1");
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let n = c.node("n1").unwrap();
        let web = sel(json!({"matchLabels": {"app": "web"}}));
        assert_eq!(n.count_selected(&web, |ns| ns == "d", false), Some(2));
        assert_eq!(n.count_selected(&web, |ns| ns == "d", true), Some(1));
        assert_eq!(n.count_selected(&web, |_| true, false), Some(3));
        // Several labels: 0 at once when one is on no pod, else a scan is needed.
        let two = sel(json!({"matchLabels": {"app": "web", "tier": "y"}}));
        assert_eq!(n.count_selected(&two, |_| true, false), Some(0));
        let both = sel(json!({"matchLabels": {"app": "web", "tier": "x"}}));
        assert_eq!(n.count_selected(&both, |_| true, false), None);
        let expr = sel(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}));
        assert_eq!(n.count_selected(&expr, |_| true, false), None);
        c.forget("a");
        c.forget("b");
        let n = c.node("n1").unwrap();
        assert_eq!(n.count_selected(&web, |ns| ns == "d", false), Some(0));
        assert_eq!(n.count_selected(&web, |_| true, true), Some(1));
        assert!(
            !n.pod_labels.contains_key("tier"),
            "emptied counts are dropped"
        );
    }

    #[test]
    fn the_cluster_wide_label_index_follows_placement_moves_and_removal() {
        let labelled = |name: &str, ns: &str, app: &str| {
            Arc::new(PodInfo::new(Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "uid": name, "namespace": ns, "labels": {"app": app}},
                    "spec": {"containers": []}
                }))
                .unwrap(),
            )))
        };
        // A node is named once per namespace that has matching pods there: sum per node.
        let sorted = |v: Vec<(&str, i64)>| {
            let mut per_node = BTreeMap::<String, i64>::new();
            for (n, c) in v {
                *per_node.entry(n.to_string()).or_default() += c;
            }
            per_node.into_iter().collect::<Vec<_>>()
        };
        let mut c = Cache::default();
        c.upsert_node(node("n1"));
        c.upsert_node(node("n2"));
        c.assume(labelled("a", "d", "web"), "n1");
        c.assume(labelled("b", "d", "web"), "n1");
        c.assume(labelled("c", "d", "web"), "n2");
        c.assume(labelled("x", "e", "web"), "n2");
        c.assume(labelled("y", "d", "db"), "n2");
        let d_web = c.placed_with_label("app", "web", |ns| ns == "d", false);
        assert_eq!(
            sorted(d_web),
            [("n1".to_string(), 2), ("n2".to_string(), 1)]
        );
        assert_eq!(
            sorted(c.placed_with_label("app", "web", |_| true, false)),
            [("n1".to_string(), 2), ("n2".to_string(), 2)]
        );
        // The watch confirms "a" on another node than assumed: it moves.
        c.add_or_update_bound(labelled("a", "d", "web").pod.clone(), "n2");
        assert_eq!(
            sorted(c.placed_with_label("app", "web", |ns| ns == "d", false)),
            [("n1".to_string(), 1), ("n2".to_string(), 2)]
        );
        c.remove_pod("b");
        c.forget("c");
        c.remove_pod("a");
        c.remove_pod("x");
        assert!(c
            .placed_with_label("app", "web", |_| true, false)
            .is_empty());
        assert_eq!(
            c.placed_with_label("app", "db", |_| true, true),
            [("n2", 1)]
        );
        c.remove_pod("y");
        assert!(c.placed_by_label.is_empty(), "emptied entries are dropped");
    }
}
