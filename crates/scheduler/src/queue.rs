//! The scheduling queue as upstream's: an active heap (priority, then age), a back-off heap
//! (1 s doubling to 10 s per attempt), and the unschedulable pods, moved back when a cluster
//! event could make them fit (the plugins that refused them say which events matter).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::{pod_key, pod_priority, NodeChange};
use crate::plugins::Plugin;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// upstream `podMaxInUnschedulablePodsDuration`: a pod waits at most this long for an event.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Cluster changes that may let a waiting pod fit.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Node(NodeChange),
    /// A pod was placed on a node, or a placed pod's labels changed.
    AssignedPodAdded,
    /// A placed pod went away (deleted or finished).
    AssignedPodDeleted,
}

/// upstream's `EventsToRegister`, per plugin.
fn plugin_cares(p: Plugin, e: Event) -> bool {
    use Plugin::*;
    match e {
        Event::Node(c) => match p {
            NodeUnschedulable => c.added || c.unschedulable || c.taints,
            NodeName => c.added,
            TaintToleration => c.added || c.taints,
            NodeAffinity => c.added || c.labels,
            NodePorts => c.added,
            NodeResourcesFit => c.added || c.allocatable,
            VolumeBinding => c.added || c.labels,
            PodTopologySpread => c.added || c.labels || c.taints,
            InterPodAffinity => c.added || c.labels,
        },
        Event::AssignedPodAdded => matches!(p, PodTopologySpread | InterPodAffinity),
        Event::AssignedPodDeleted => {
            matches!(
                p,
                NodePorts | NodeResourcesFit | PodTopologySpread | InterPodAffinity
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable(Instant),
    /// Being scheduled or bound; the value is the move count when it was popped.
    InFlight(u64),
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    state: State,
    attempts: u32,
    backoff_until: Instant,
    rejected_by: HashSet<Plugin>,
    /// Bumped whenever the entry is re-queued, so stale heap items are skipped.
    gen: u64,
    seq: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    created: i64,
    seq: u64,
    key: String,
    gen: u64,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        // Higher priority first, then the older pod, then the earlier arrival.
        self.priority
            .cmp(&o.priority)
            .then(o.created.cmp(&self.created))
            .then(o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A pod handed out for a scheduling attempt.
#[derive(Debug, Clone)]
pub struct Popped {
    pub key: String,
    pub pod: Arc<Pod>,
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct Queue {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String, u64)>>,
    seq: u64,
    moves: u64,
    /// Keys of the pods in the unschedulable pool, so events do not scan the whole queue.
    waiting: HashSet<String>,
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0)
}

fn backoff_for(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d > MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

/// Whether an update to a waiting pod may change the outcome (upstream: anything but
/// status and metadata other than labels).
fn worth_retrying(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || old.metadata.labels != new.metadata.labels
}

impl Queue {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// An unscheduled pod seen by the watch: queue it, or refresh the queued copy.
    pub fn add_or_update(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = pod_key(&pod);
        match self.pods.get_mut(&key) {
            None => {
                self.seq += 1;
                self.pods.insert(
                    key.clone(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        backoff_until: now,
                        rejected_by: HashSet::new(),
                        gen: 0,
                        seq: self.seq,
                    },
                );
                self.push_active(&key);
            }
            Some(e) => {
                let retry = worth_retrying(&e.pod, &pod);
                e.pod = pod;
                if retry && matches!(e.state, State::Unschedulable(_)) {
                    self.requeue(&key, now);
                }
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.pods.remove(key);
        self.waiting.remove(key);
    }

    fn push_active(&mut self, key: &str) {
        self.waiting.remove(key);
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.state = State::Active;
        e.gen += 1;
        self.active.push(ActiveItem {
            priority: pod_priority(&e.pod),
            created: created(&e.pod),
            seq: e.seq,
            key: key.to_string(),
            gen: e.gen,
        });
    }

    fn push_backoff(&mut self, key: &str) {
        self.waiting.remove(key);
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.state = State::Backoff;
        e.gen += 1;
        self.backoff
            .push(Reverse((e.backoff_until, e.seq, key.to_string(), e.gen)));
    }

    /// Back to active, or to back-off while its back-off has not run out.
    fn requeue(&mut self, key: &str, now: Instant) {
        match self.pods.get(key) {
            Some(e) if e.backoff_until > now => self.push_backoff(key),
            Some(_) => self.push_active(key),
            None => {}
        }
    }

    /// Move pods whose back-off ended to active; the next back-off end, if any.
    pub fn flush_backoff(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((until, _, key, gen))) = self.backoff.peek().cloned() {
            let live = self
                .pods
                .get(&key)
                .is_some_and(|e| e.gen == gen && e.state == State::Backoff);
            if !live {
                self.backoff.pop();
                continue;
            }
            if until > now {
                return Some(until);
            }
            self.backoff.pop();
            self.push_active(&key);
        }
        None
    }

    /// Pods unschedulable for longer than `MAX_UNSCHEDULABLE` are tried again.
    pub fn flush_unschedulable_leftover(&mut self, now: Instant) {
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable(t) if now.duration_since(t) >= MAX_UNSCHEDULABLE))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.requeue(&k, now);
        }
    }

    /// The next pod to schedule, highest priority first.
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush_backoff(now);
        while let Some(item) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&item.key) else {
                continue;
            };
            if e.gen != item.gen || e.state != State::Active {
                continue;
            }
            e.state = State::InFlight(self.moves);
            return Some(Popped {
                key: item.key,
                pod: e.pod.clone(),
                attempts: e.attempts,
            });
        }
        None
    }

    /// The latest copy of a queued pod.
    pub fn pod(&self, key: &str) -> Option<Arc<Pod>> {
        self.pods.get(key).map(|e| e.pod.clone())
    }

    /// The attempt failed: no node fits. The pod waits for an event one of `plugins` cares
    /// about — unless such an event already came while it was being scheduled.
    pub fn unschedulable(&mut self, key: &str, plugins: HashSet<Plugin>, now: Instant) {
        let moves = self.moves;
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        e.backoff_until = now + backoff_for(e.attempts);
        e.rejected_by = plugins;
        match e.state {
            State::InFlight(at) if at != moves => self.push_backoff(key),
            _ => {
                e.state = State::Unschedulable(now);
                e.gen += 1;
                self.waiting.insert(key.to_string());
            }
        }
    }

    /// The attempt failed for another reason (an API error, a failed bind): back off.
    pub fn error(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        e.backoff_until = now + backoff_for(e.attempts);
        self.push_backoff(key);
    }

    /// A cluster event: unschedulable pods refused by a plugin that cares go back.
    pub fn on_event(&mut self, event: Event, now: Instant) -> bool {
        self.moves += 1;
        let keys: Vec<String> = self
            .waiting
            .iter()
            .filter(|k| {
                self.pods.get(*k).is_some_and(|e| {
                    e.rejected_by.is_empty()
                        || e.rejected_by.iter().any(|p| plugin_cares(*p, event))
                })
            })
            .cloned()
            .collect();
        let moved = !keys.is_empty();
        for k in keys {
            self.requeue(&k, now);
        }
        moved
    }

    /// Number of pods waiting in each pool: (active, backoff, unschedulable, in flight).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for e in self.pods.values() {
            match e.state {
                State::Active => c.0 += 1,
                State::Backoff => c.1 += 1,
                State::Unschedulable(_) => c.2 += 1,
                State::InFlight(_) => c.3 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "uid": name, "creationTimestamp": created},
                "spec": {"containers": [], "priority": prio}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn priority_then_age() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add_or_update(pod("old-low", 0, "2024-01-01T00:00:00Z"), now);
        q.add_or_update(pod("new-high", 10, "2024-01-02T00:00:00Z"), now);
        q.add_or_update(pod("new-low", 0, "2024-01-02T00:00:00Z"), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now).map(|p| p.key)).collect();
        assert_eq!(order, vec!["new-high", "old-low", "new-low"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(30), Duration::from_secs(10));
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0, "2024-01-01T00:00:00Z"), t0);
        q.pop(t0).unwrap();
        q.error("p", t0);
        assert!(q.pop(t0).is_none());
        assert_eq!(q.flush_backoff(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop(t0 + Duration::from_secs(1)).unwrap().attempts, 1);
    }

    #[test]
    fn unschedulable_waits_for_an_event_its_plugins_care_about() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0, "2024-01-01T00:00:00Z"), t0);
        q.pop(t0).unwrap();
        q.unschedulable("p", [Plugin::NodeResourcesFit].into(), t0);
        let later = t0 + Duration::from_secs(5);
        // A node's labels changing cannot give it cpu.
        assert!(!q.on_event(
            Event::Node(NodeChange {
                labels: true,
                ..Default::default()
            }),
            later
        ));
        assert!(q.pop(later).is_none());
        assert!(q.on_event(Event::AssignedPodDeleted, later));
        assert_eq!(q.pop(later).unwrap().key, "p");
        // An event during the attempt sends the pod to back-off, not to wait.
        q.unschedulable("p", [Plugin::NodeAffinity].into(), later);
        assert!(q.on_event(
            Event::Node(NodeChange {
                added: true,
                ..Default::default()
            }),
            later
        ));
        let p = q.pop(later + Duration::from_secs(10)).unwrap();
        q.on_event(Event::AssignedPodDeleted, later);
        q.unschedulable(&p.key, [Plugin::NodeAffinity].into(), later);
        assert_eq!(q.counts(), (0, 1, 0, 0));
        // Its own spec changing is worth another try.
        let mut q = Queue::default();
        q.add_or_update(pod("p", 0, "2024-01-01T00:00:00Z"), t0);
        q.pop(t0);
        q.unschedulable("p", [Plugin::TaintToleration].into(), t0);
        q.add_or_update(
            pod("p", 5, "2024-01-01T00:00:00Z"),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(q.pop(t0 + Duration::from_secs(60)).unwrap().key, "p");
    }
}
