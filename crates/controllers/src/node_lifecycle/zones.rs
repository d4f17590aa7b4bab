//! Node lifecycle's disruption handling (upstream's handleDisruption with a rate-limited
//! NoExecute tainter per zone): how fast nodes that stopped may get the taints that evict
//! their pods, by how much of their zone and of the cluster is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const BETA_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";
const BETA_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";

/// Upstream's flags: `--node-eviction-rate`, `--secondary-node-eviction-rate`,
/// `--unhealthy-zone-threshold`, `--large-cluster-size-threshold`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes a second per zone that may get NoExecute taints while the zone is healthy.
    pub rate: f64,
    /// The rate in a partly disrupted zone of more than `large_cluster` nodes (smaller zones
    /// stop tainting then).
    pub secondary_rate: f64,
    /// The share of a zone's nodes (more than 2) not Ready that makes it partly disrupted.
    pub unhealthy_threshold: f64,
    pub large_cluster: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 0.1,
            secondary_rate: 0.01,
            unhealthy_threshold: 0.55,
            large_cluster: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// The zone a node is in (upstream's GetZoneKey: region and zone, GA labels first).
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |ga: &str, beta: &str| {
        labels
            .and_then(|l| l.get(ga).or_else(|| l.get(beta)))
            .cloned()
            .unwrap_or_default()
    };
    let (region, zone) = (
        get(REGION_LABEL, BETA_REGION_LABEL),
        get(ZONE_LABEL, BETA_ZONE_LABEL),
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

/// Upstream's ComputeZoneState: no node Ready is a full disruption; more than 2 not Ready
/// and at least `threshold` of them a partial one.
pub fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// A token bucket of one token (upstream's limiter with burst 1); a rate of 0 never admits.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    fn swap(&mut self, rate: f64, now: Instant) {
        if rate != self.rate {
            // A limiter that was waiting keeps waiting (upstream drains the new one).
            let waiting = self.refill(now) < 1.0;
            *self = Bucket::new(rate, now);
            if waiting {
                self.tokens = 0.0;
            }
        }
    }

    fn refill(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.at = now;
        self.tokens
    }

    fn take(&mut self, now: Instant) -> Admit {
        if self.rate <= 0.0 {
            return Admit::Stopped;
        }
        if self.refill(now) >= 1.0 {
            self.tokens -= 1.0;
            Admit::Now
        } else {
            Admit::After(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Whether a node may get its NoExecute taint now.
#[derive(Debug, PartialEq)]
pub enum Admit {
    Now,
    After(Duration),
    /// Its zone does not taint at present.
    Stopped,
}

/// What the cluster as a whole looks like to the tainter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disruption {
    /// Every node is down: likelier the control plane's fault (or its network's) than the
    /// nodes'; no NoExecute taints at all (upstream's "master disruption mode").
    pub all_down: bool,
    /// When the cluster last left that mode: every node's grace period starts again then.
    pub recovered_at: Option<Timestamp>,
}

/// How often the zone counts are rebuilt from every node (upstream's
/// `--node-monitor-period`); in between, each look updates the one node it is about, so a
/// lease renewal costs O(1) rather than a pass over every node (100 renewals a second with
/// 1,000 nodes were 5% of an idle server's CPU). The rebuild drops deleted nodes.
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Inner {
    /// Each node's zone and readiness as last looked at, and their sums per zone
    /// (ready, not ready).
    nodes: HashMap<String, (String, bool)>,
    counts: HashMap<String, (usize, usize)>,
    counted_at: Option<Instant>,
    states: HashMap<String, ZoneState>,
    sizes: HashMap<String, usize>,
    buckets: HashMap<String, Bucket>,
    disruption: Disruption,
}

pub struct Zones {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl Zones {
    pub fn new(limits: Limits) -> Zones {
        Zones {
            limits,
            inner: Mutex::new(Inner {
                nodes: HashMap::new(),
                counts: HashMap::new(),
                counted_at: None,
                states: HashMap::new(),
                sizes: HashMap::new(),
                buckets: HashMap::new(),
                disruption: Disruption {
                    all_down: false,
                    recovered_at: None,
                },
            }),
        }
    }

    /// The disruption as last observed.
    pub fn disruption(&self) -> Disruption {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .disruption
    }

    /// The zone states from every node's Ready condition, with `fresh` as just looked at
    /// (the loop may just have written it; `all` lists every node, read only when the counts
    /// are rebuilt); the disruption now, and whether the cluster entered or left "every node
    /// down" with this look.
    pub fn observe(
        &self,
        all: impl FnOnce() -> Vec<Arc<Node>>,
        fresh: &Node,
        now: Instant,
    ) -> (Disruption, bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh_name = fresh.metadata.name.clone().unwrap_or_default();
        let due = inner
            .counted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RECOUNT_EVERY);
        if due {
            let nodes: HashMap<String, (String, bool)> = all()
                .iter()
                .map(|n| &**n)
                .filter(|n| n.metadata.name.as_deref() != Some(fresh_name.as_str()))
                .chain(std::iter::once(fresh))
                .map(|n| {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    (name, (zone_of(n), is_ready(n)))
                })
                .collect();
            let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
            for (zone, ready) in nodes.values() {
                count(&mut counts, zone, *ready, true);
            }
            inner.nodes = nodes;
            inner.counts = counts;
            inner.counted_at = Some(now);
        } else {
            let now_seen = (zone_of(fresh), is_ready(fresh));
            let before = inner.nodes.insert(fresh_name, now_seen.clone());
            if before.as_ref() != Some(&now_seen) {
                if let Some((zone, ready)) = before {
                    count(&mut inner.counts, &zone, ready, false);
                }
                count(&mut inner.counts, &now_seen.0, now_seen.1, true);
            }
        }
        let counts = inner.counts.clone();
        let all_down = !counts.is_empty() && counts.values().all(|&(ready, _)| ready == 0);
        let was = inner.disruption.all_down;
        inner.sizes = counts.iter().map(|(z, c)| (z.clone(), c.0 + c.1)).collect();
        inner.states = counts
            .iter()
            .map(|(z, &(r, nr))| {
                (
                    z.clone(),
                    zone_state(r, nr, self.limits.unhealthy_threshold),
                )
            })
            .collect();
        inner.buckets.retain(|z, _| counts.contains_key(z));
        let limits = self.limits;
        let Inner {
            states,
            sizes,
            buckets,
            ..
        } = &mut *inner;
        for (zone, state) in states.iter() {
            let rate = rate_for(&limits, *state, sizes.get(zone).copied().unwrap_or(0));
            buckets
                .entry(zone.clone())
                .or_insert_with(|| Bucket::new(rate, now))
                .swap(rate, now);
        }
        let changed = was != all_down;
        if changed {
            if all_down {
                tracing::warn!("every node is not Ready: no NoExecute taints until one is back (disruption mode)");
            } else {
                tracing::info!("a node is Ready again: leaving disruption mode; every node's grace period starts over");
                inner.disruption.recovered_at = Some(Timestamp::now());
                let rates: Vec<(String, f64)> = inner
                    .states
                    .iter()
                    .map(|(z, s)| {
                        let size = inner.sizes.get(z).copied().unwrap_or(0);
                        (z.clone(), rate_for(&limits, *s, size))
                    })
                    .collect();
                for (zone, rate) in rates {
                    inner.buckets.insert(zone, Bucket::new(rate, now));
                }
            }
            inner.disruption.all_down = all_down;
        }
        (inner.disruption, changed)
    }

    /// Take the zone's token for one NoExecute taint.
    pub fn admit(&self, zone: &str, now: Instant) -> Admit {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.disruption.all_down {
            return Admit::Stopped;
        }
        let rate = self.limits.rate;
        inner
            .buckets
            .entry(zone.to_string())
            .or_insert_with(|| Bucket::new(rate, now))
            .take(now)
    }
}

/// Add (or take away) one node of `zone` to the per-zone sums, dropping emptied zones.
fn count(counts: &mut HashMap<String, (usize, usize)>, zone: &str, ready: bool, add: bool) {
    let c = counts.entry(zone.to_string()).or_default();
    let slot = if ready { &mut c.0 } else { &mut c.1 };
    *slot = if add {
        *slot + 1
    } else {
        slot.saturating_sub(1)
    };
    if *c == (0, 0) {
        counts.remove(zone);
    }
}

/// Upstream's setLimiterInZone: the normal rate, the secondary one (or none in a small
/// cluster) when partly disrupted, the normal one again when the zone is wholly down
/// (other zones being up, the zone is really gone).
fn rate_for(limits: &Limits, state: ZoneState, zone_size: usize) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => limits.rate,
        ZoneState::PartialDisruption if zone_size > limits.large_cluster => limits.secondary_rate,
        ZoneState::PartialDisruption => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"Unknown"}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn zone_states_as_upstream_computes_them() {
        assert_eq!(zone_state(4, 0, 0.55), ZoneState::Normal);
        // Two down is never a disruption, whatever the share.
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
        let mut n = (*node("a", "z1", true)).clone();
        assert_eq!(zone_of(&n), ":\x00:z1");
        n.metadata.labels = None;
        assert_eq!(zone_of(&n), "");
    }

    /// Look at every node in turn, as the loop does when each changes; the last answer,
    /// and whether any look changed the disruption mode.
    fn observe_each(zones: &Zones, nodes: &[Arc<Node>], now: Instant) -> (Disruption, bool) {
        let mut changed = false;
        let mut last = zones.disruption();
        for n in nodes {
            let (d, c) = zones.observe(|| nodes.to_vec(), n, now);
            changed |= c;
            last = d;
        }
        (last, changed)
    }

    #[test]
    fn taints_are_paced_per_zone_and_stop_when_everything_is_down() {
        let zones = Zones::new(Limits {
            rate: 2.0,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let mut nodes = vec![
            node("a", "z1", true),
            node("b", "z1", false),
            node("c", "z2", false),
            node("d", "z2", true),
        ];
        let (d, changed) = observe_each(&zones, &nodes, t0);
        assert!(!d.all_down && !changed);
        // One token per zone at once, then one every 500 ms.
        assert_eq!(zones.admit(":\x00:z1", t0), Admit::Now);
        assert_eq!(zones.admit(":\x00:z2", t0), Admit::Now);
        match zones.admit(":\x00:z1", t0 + Duration::from_millis(100)) {
            Admit::After(d) => assert!(
                d.abs_diff(Duration::from_millis(400)) < Duration::from_millis(1),
                "{d:?}"
            ),
            a => panic!("{a:?}"),
        }
        assert_eq!(
            zones.admit(":\x00:z1", t0 + Duration::from_millis(600)),
            Admit::Now
        );
        // Every node down: nothing is tainted, and the change is reported once.
        nodes = nodes
            .iter()
            .map(|n| node(n.metadata.name.as_deref().unwrap(), "z1", false))
            .collect();
        let t1 = t0 + Duration::from_secs(2);
        let (d, changed) = observe_each(&zones, &nodes, t1);
        assert!(d.all_down && changed);
        assert_eq!(zones.admit(":\x00:z1", t1), Admit::Stopped);
        let (_, again) = observe_each(&zones, &nodes, t1 + Duration::from_secs(2));
        assert!(!again);
        // One back of four: a small zone partly disrupted stops tainting, and the grace
        // periods start over.
        nodes[0] = node("a", "z1", true);
        let t2 = t1 + Duration::from_secs(4);
        let (d, changed) = observe_each(&zones, &nodes, t2);
        assert!(!d.all_down && changed && d.recovered_at.is_some());
        assert_eq!(zones.admit(":\x00:z1", t2), Admit::Stopped);
        // Two back of four: one down is normal again, at the normal rate.
        nodes[1] = node("b", "z1", true);
        nodes[2] = node("c", "z1", true);
        let t3 = t2 + Duration::from_secs(2);
        observe_each(&zones, &nodes, t3);
        assert_eq!(zones.admit(":\x00:z1", t3), Admit::Now);
    }

    #[test]
    fn a_look_updates_its_node_and_the_periodic_recount_drops_deleted_ones() {
        let zones = Zones::new(Limits::default());
        let counts = || {
            let mut c: Vec<(String, (usize, usize))> = zones
                .inner
                .lock()
                .unwrap()
                .counts
                .iter()
                .map(|(z, c)| (z.clone(), *c))
                .collect();
            c.sort();
            c
        };
        let (z1, z2) = (":\x00:z1".to_string(), ":\x00:z2".to_string());
        let t0 = Instant::now();
        let mut nodes: Vec<Arc<Node>> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| node(n, "z1", true))
            .collect();
        zones.observe(|| nodes.clone(), &nodes[0], t0);
        assert_eq!(counts(), vec![(z1.clone(), (4, 0))]);
        // Between recounts only the node looked at is read (the list is not).
        let t1 = t0 + Duration::from_secs(1);
        let b = node("b", "z1", false);
        zones.observe(|| panic!("listed between recounts"), &b, t1);
        zones.observe(|| panic!("listed between recounts"), &b, t1);
        assert_eq!(counts(), vec![(z1.clone(), (3, 1))]);
        let c = node("c", "z2", true);
        zones.observe(|| panic!("listed between recounts"), &c, t1);
        assert_eq!(counts(), vec![(z1.clone(), (2, 1)), (z2.clone(), (1, 0))]);
        // The recount reads every node: d is gone.
        nodes = vec![nodes[0].clone(), b, c];
        zones.observe(|| nodes.clone(), &nodes[0], t0 + RECOUNT_EVERY);
        assert_eq!(counts(), vec![(z1, (1, 1)), (z2, (1, 0))]);
    }

    #[test]
    fn a_large_partly_disrupted_zone_slows_down() {
        let zones = Zones::new(Limits {
            rate: 1.0,
            secondary_rate: 0.5,
            large_cluster: 3,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let nodes: Vec<Arc<Node>> = (0..5)
            .map(|i| node(&format!("n{i}"), "z", i == 0))
            .collect();
        observe_each(&zones, &nodes, t0);
        assert_eq!(zones.admit(":\x00:z", t0), Admit::Now);
        assert_eq!(
            zones.admit(":\x00:z", t0),
            Admit::After(Duration::from_secs(2))
        );
    }
}
