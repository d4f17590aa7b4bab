//! The watches that feed the cache and the queue: nodes, pods, namespaces (for
//! namespaceSelector) and PodDisruptionBudgets (for preemption), via kube-runtime's watcher.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use capstan_slim::WatchApi;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher::{self, Event as WEvent};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::cache::{pod_key, PodInfo};
use crate::queue::Event;
use crate::state::{Shared, State};
use crate::writes::SCHEDULER_NAME;

/// Runs one watch for ever, handing each object to `apply`/`delete` and, after a relist,
/// the names it saw to `resync`.
async fn watch<K>(
    api: WatchApi<K>,
    shared: Arc<Shared>,
    apply: fn(&mut State, Arc<K>),
    delete: fn(&mut State, Arc<K>),
    resync: fn(&mut State, &HashSet<String>),
    trim: fn(&mut K),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let key = |o: &K| {
        let m = o.meta();
        m.uid
            .clone()
            .unwrap_or_else(|| m.name.clone().unwrap_or_default())
    };
    let mut stream = capstan_slim::watch(api, watcher::Config::default()).boxed();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(WEvent::Init) => seen.clear(),
            Ok(WEvent::InitApply(mut o)) | Ok(WEvent::Apply(mut o)) => {
                seen.insert(key(&o));
                trim(&mut o);
                apply(&mut shared.lock(), Arc::new(o));
            }
            Ok(WEvent::Delete(mut o)) => {
                trim(&mut o);
                delete(&mut shared.lock(), Arc::new(o))
            }
            Ok(WEvent::InitDone) => resync(&mut shared.lock(), &seen),
            Err(e) => {
                // The watcher re-lists by itself; back off a little so a down server is
                // not hammered.
                tracing::warn!(error = %e, kind = std::any::type_name::<K>(), "scheduler watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        shared.wake.notify_one();
    }
}

/// Drop what the scheduler never reads before caching an object: with 30,000 pods,
/// annotations and container statuses would be most of its memory (managedFields are never
/// decoded: the watch is of `Slim` objects).
fn trim_meta<K: Resource>(o: &mut K) {
    o.meta_mut().annotations = None;
}

/// A container reduced to what placement reads: requests, host ports, restart policy.
fn trim_container(c: &mut k8s_openapi::api::core::v1::Container) {
    *c = k8s_openapi::api::core::v1::Container {
        name: std::mem::take(&mut c.name),
        resources: c.resources.take(),
        ports: c.ports.take(),
        restart_policy: c.restart_policy.take(),
        ..Default::default()
    };
}

fn trim_pod(p: &mut Pod) {
    trim_meta(p);
    if let Some(spec) = p.spec.as_mut() {
        spec.containers.iter_mut().for_each(trim_container);
        spec.init_containers
            .iter_mut()
            .flatten()
            .for_each(trim_container);
        spec.ephemeral_containers = None;
        spec.security_context = None;
        spec.dns_config = None;
        spec.readiness_gates = None;
        // Only claims matter (the PVC check); projected tokens, config maps etc. do not.
        // A k8s-openapi `Volume` is 3.2 KB inline whatever it holds, and admission gives
        // every pod a projected token volume: a retained-but-empty Vec would keep that.
        if let Some(v) = spec.volumes.as_mut() {
            v.retain(|v| v.persistent_volume_claim.is_some());
            v.shrink_to_fit();
        }
        if spec.volumes.as_ref().is_some_and(Vec::is_empty) {
            spec.volumes = None;
        }
    }
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if let Some(s) = p.status.as_mut() {
        s.container_statuses = None;
        s.init_container_statuses = None;
        s.ephemeral_container_statuses = None;
        s.pod_ips = None;
        s.host_ips = None;
        s.pod_ip = None;
        s.host_ip = None;
        s.qos_class = None;
        s.message = None;
        s.reason = None;
        // Only a pending pod's PodScheduled condition is read (to skip rewriting the same
        // Unschedulable message); a placed pod's conditions are never looked at.
        match s.conditions.as_mut() {
            Some(c) if !bound => {
                c.retain(|c| c.type_ == "PodScheduled");
                c.shrink_to_fit();
            }
            _ => s.conditions = None,
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn responsible(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .map(|s| s.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME)
        .unwrap_or(false)
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub fn apply_pod(st: &mut State, pod: Arc<Pod>) {
    let key = pod_key(&pod);
    let now = Instant::now();
    if let Some(node) = node_name(&pod).map(str::to_string) {
        st.queue.delete(&key);
        st.unscheduled_seen.remove(&key);
        st.nominations.remove(&key);
        if is_terminal(&pod) {
            if st.cache.remove_pod(&key) {
                st.queue.on_event(Event::AssignedPodDeleted, now);
            }
            return;
        }
        if st.cache.add_or_update_bound(pod, &node) {
            st.queue.on_event(Event::AssignedPodAdded, now);
        }
        return;
    }
    if !responsible(&pod) || is_terminal(&pod) {
        return;
    }
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    // Terminating pods are not placed; gated pods wait until their gates are removed
    // (upstream's SchedulingGates PreEnqueue).
    if pod.metadata.deletion_timestamp.is_some() || gated {
        st.queue.delete(&key);
        st.unscheduled_seen.remove(&key);
        return;
    }
    // A pod whose bind is in flight is not queued again; the bind's outcome decides.
    if st.cache.is_assumed(&key) {
        return;
    }
    if let Some(nn) = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        if st.nominations.node_of(&key).is_none() {
            let info = PodInfo::new(pod.clone());
            st.nominations.set(&info, nn);
        }
    }
    st.unscheduled_seen.insert(key, pod.clone());
    st.queue.add_or_update(pod, now);
}

pub fn delete_pod(st: &mut State, pod: Arc<Pod>) {
    let key = pod_key(&pod);
    st.queue.delete(&key);
    st.unscheduled_seen.remove(&key);
    st.nominations.remove(&key);
    if st.cache.remove_pod(&key) {
        st.queue.on_event(Event::AssignedPodDeleted, Instant::now());
    }
}

fn resync_pods(st: &mut State, seen: &HashSet<String>) {
    // Pods deleted while the watch was down: forget them (assumed pods stay; their bind
    // decides).
    for uid in st.cache.pod_uids() {
        if !seen.contains(&uid) && !st.cache.is_assumed(&uid) && st.cache.remove_pod(&uid) {
            st.queue.on_event(Event::AssignedPodDeleted, Instant::now());
        }
    }
    let gone: Vec<String> = st
        .unscheduled_seen
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        st.unscheduled_seen.remove(&k);
        st.queue.delete(&k);
        st.nominations.remove(&k);
    }
}

fn apply_node(st: &mut State, node: Arc<Node>) {
    let change = st.cache.upsert_node(node);
    if change.any() {
        st.queue.on_event(Event::Node(change), Instant::now());
    }
}

fn delete_node(st: &mut State, node: Arc<Node>) {
    st.cache
        .remove_node(node.metadata.name.as_deref().unwrap_or(""));
}

fn resync_nodes(st: &mut State, seen: &HashSet<String>) {
    // Nodes are keyed by uid in `seen`; compare by the names the cache holds.
    let names: Vec<String> = st
        .cache
        .nodes()
        .filter(|n| {
            n.node
                .as_ref()
                .and_then(|o| o.metadata.uid.as_ref())
                .is_some_and(|u| !seen.contains(u))
        })
        .map(|n| n.name().to_string())
        .collect();
    for n in names {
        st.cache.remove_node(&n);
    }
}

fn apply_namespace(st: &mut State, ns: Arc<Namespace>) {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    let changed = st.cache.namespaces.get(&name) != Some(&labels);
    st.cache.namespaces.insert(name, labels);
    if changed {
        // namespaceSelector terms may match now.
        st.queue.on_event(Event::AssignedPodAdded, Instant::now());
    }
}

fn delete_namespace(st: &mut State, ns: Arc<Namespace>) {
    st.cache
        .namespaces
        .remove(ns.metadata.name.as_deref().unwrap_or(""));
}

fn resync_nothing<S>(_: &mut State, _: &HashSet<S>) {}

fn pdb_key(p: &PodDisruptionBudget) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

fn apply_pdb(st: &mut State, p: Arc<PodDisruptionBudget>) {
    st.pdbs.insert(pdb_key(&p), p);
}

fn delete_pdb(st: &mut State, p: Arc<PodDisruptionBudget>) {
    st.pdbs.remove(&pdb_key(&p));
}

/// Start the four watches.
pub fn spawn(client: &Client, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(watch(
            WatchApi::<Node>::all(client.clone()),
            shared.clone(),
            apply_node,
            delete_node,
            resync_nodes,
            trim_meta,
        )),
        tokio::spawn(watch(
            WatchApi::<Pod>::all(client.clone()),
            shared.clone(),
            apply_pod,
            delete_pod,
            resync_pods,
            trim_pod,
        )),
        tokio::spawn(watch(
            WatchApi::<Namespace>::all(client.clone()),
            shared.clone(),
            apply_namespace,
            delete_namespace,
            resync_nothing,
            trim_meta,
        )),
        tokio::spawn(watch(
            WatchApi::<PodDisruptionBudget>::all(client.clone()),
            shared.clone(),
            apply_pdb,
            delete_pdb,
            resync_nothing,
            trim_meta,
        )),
    ]
}
