//! The node lifecycle controller (upstream's pkg/controller/nodelifecycle): a node whose
//! Lease goes unrenewed past the grace period is Ready=Unknown, its pods not Ready, and
//! every node carries the unreachable / not-ready taints its Ready condition calls for —
//! the NoExecute ones (which evict) paced per zone, and none while every node is down.

mod zones;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_slim::{Action, Controller};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::events::EventType;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a kubelet posts, all Unknown when it stops (upstream's list).
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// How soon a node whose zone does not taint now looks again (upstream's monitor period).
const MONITOR_PERIOD: Duration = Duration::from_secs(5);

pub use zones::Limits as EvictionLimits;

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
    /// Nodes get the whole grace period from the controller's start, as upstream.
    started: Timestamp,
    recorder: crate::events::Recorder,
    /// Node Leases, watched with the controller-manager's client as upstream's Lease
    /// informer (`node-controller` may not read Leases itself).
    leases: crate::informers::Shared<Lease>,
    zones: zones::Zones,
    /// Every node again: the cluster entered or left "every node down".
    resync: futures::channel::mpsc::UnboundedSender<()>,
}

pub async fn run(ctx: Arc<Context>) {
    let leases = crate::informers::Shared::start(capstan_slim::WatchApi::namespaced(
        ctx.informer_client(),
        LEASE_NAMESPACE,
    ));
    leases.ready().await;
    let (resync, resyncs) = futures::channel::mpsc::unbounded();
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        started: Timestamp::now(),
        recorder: ctx.recorder("node-controller"),
        leases,
        zones: zones::Zones::new(ctx.opts.node_eviction),
        resync,
    });
    let nodes = ctx.nodes();
    Controller::for_shared_stream(nodes.subscribe(), nodes.store.clone())
        .reconcile_all_on(resyncs)
        .run(reconcile, error_policy, lp)
        .await;
}

fn error_policy(node: Arc<Node>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&node.name_any());
    tracing::warn!(node = %node.name_any(), attempts, error = %err, "node health update failed; retrying");
    Action::requeue(delay)
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

async fn reconcile(node: Arc<Node>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let name = node.name_any();
    let now = Timestamp::now();
    let grace =
        i64::try_from(lp.ctx.opts.node_monitor_grace_period.as_millis()).unwrap_or(i64::MAX);
    let renewed = lp
        .leases
        .store
        .get(&kube::runtime::reflector::ObjectRef::new(&name).within(LEASE_NAMESPACE))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let heartbeat = condition(&node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    // The last sign of life (never in the future, never before we started watching or
    // the cluster had a Ready node again after every node was down).
    let recovered = lp.zones.disruption().recovered_at;
    let seen = [renewed, heartbeat, Some(lp.started), recovered]
        .into_iter()
        .flatten()
        .map(|t| millis(t).min(millis(now)))
        .max()
        .unwrap_or(millis(now));
    let deadline = seen.saturating_add(grace);
    let mut node = node;
    if millis(now) >= deadline {
        let ready_unknown = condition(&node, "Ready").is_some_and(|c| c.status == "Unknown");
        if !ready_unknown {
            node = Arc::new(mark_unknown(&lp, &node, now).await?);
            mark_pods_not_ready(&lp, &name).await;
            lp.recorder
                .record(
                    node.as_ref(),
                    EventType::Normal,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
    }
    let (disruption, changed) =
        lp.zones
            .observe(|| lp.ctx.nodes().store.state(), &node, Instant::now());
    if changed {
        let _ = lp.resync.unbounded_send(());
    }
    let want = wanted_taints(&node);
    let mut taint_retry = None;
    let no_execute = match want {
        None => false,
        Some(_) if disruption.all_down => false,
        // One NoExecute key for another (Unknown ↔ False) swaps at once, as upstream.
        Some(_)
            if taints_of(&node)
                .iter()
                .any(|t| ours(t) && t.effect == "NoExecute") =>
        {
            true
        }
        Some(_) => match lp.zones.admit(&zones::zone_of(&node), Instant::now()) {
            zones::Admit::Now => true,
            zones::Admit::After(wait) => {
                taint_retry = Some(wait);
                false
            }
            zones::Admit::Stopped => {
                taint_retry = Some(MONITOR_PERIOD);
                false
            }
        },
    };
    sync_taints(&lp, &node, want, no_execute, now).await?;
    lp.backoff.reset(&name);
    // Look again when the grace period would run out (a renewal pushes that later).
    let wait = if millis(now) >= deadline {
        grace
    } else {
        deadline - millis(now) + 50
    };
    let wait = Duration::from_millis(u64::try_from(wait.max(100)).unwrap_or(u64::MAX));
    Ok(Action::requeue(match taint_retry {
        Some(t) => wait.min(t.max(Duration::from_millis(50))),
        None => wait,
    }))
}

/// Every kubelet condition Unknown, heartbeat times kept (upstream's tryUpdateNodeHealth).
async fn mark_unknown(lp: &Loop, node: &Node, now: Timestamp) -> Result<Node, kube::Error> {
    let name = node.name_any();
    let mut conds: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for type_ in KUBELET_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                }
            }
            None => conds.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    tracing::info!(node = %name, "node stopped posting status: Ready=Unknown");
    let api: Api<Node> = Api::all(lp.ctx.client.clone());
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conds}})),
    )
    .await
}

/// upstream's MarkPodsNotReady: the node's pods are no longer Ready.
async fn mark_pods_not_ready(lp: &Loop, node: &str) {
    let now = Timestamp::now().to_string();
    for pod in lp.ctx.pods().store.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
            || !crate::pods::is_ready(&pod)
        {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(
            lp.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            tracing::debug!(pod = %pod.name_any(), node, error = %e, "could not mark a pod not ready");
        }
    }
}

/// The taints the node's Ready condition calls for (upstream's NoExecute taints and the
/// NoSchedule ones of TaintNodesByCondition).
fn wanted_taints(node: &Node) -> Option<&'static str> {
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    }
}

/// One of the taints this loop owns.
fn ours(t: &Taint) -> bool {
    (t.key == UNREACHABLE || t.key == NOT_READY)
        && (t.effect == "NoExecute" || t.effect == "NoSchedule")
}

/// `current` with our taints made what `want` says: its NoSchedule taint, and its NoExecute
/// one when `no_execute` (admitted by the zone's pace).
fn compose(current: &[Taint], want: Option<&str>, no_execute: bool, now: Timestamp) -> Vec<Taint> {
    let mut next: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
    if let Some(key) = want {
        let effects: &[&str] = if no_execute {
            &["NoSchedule", "NoExecute"]
        } else {
            &["NoSchedule"]
        };
        for &effect in effects {
            // Keep a taint already there as it is (its timeAdded counts tolerations down).
            match current.iter().find(|t| t.key == key && t.effect == effect) {
                Some(t) => next.push(t.clone()),
                None => next.push(Taint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                }),
            }
        }
    }
    next
}

fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    let key = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

async fn sync_taints(
    lp: &Loop,
    node: &Node,
    want: Option<&str>,
    no_execute: bool,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let current = taints_of(node);
    if same_taints(&current, &compose(&current, want, no_execute, now)) {
        return Ok(());
    }
    let api: Api<Node> = Api::all(lp.ctx.client.clone());
    // The freshest copy (a status write may have moved it); a conflict is retried.
    let mut fresh = api.get(&node.name_any()).await?;
    let next = compose(&taints_of(&fresh), want, no_execute, now);
    let spec = fresh.spec.get_or_insert_with(Default::default);
    spec.taints = (!next.is_empty()).then_some(next);
    api.replace(&node.name_any(), &PostParams::default(), &fresh)
        .await?;
    tracing::info!(node = %node.name_any(), taint = ?want, no_execute, "node taints updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_follow_the_ready_condition_and_keep_others() {
        let now = Timestamp::now();
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = compose(std::slice::from_ref(&other), Some(UNREACHABLE), true, now);
        assert_eq!(t.len(), 3);
        assert!(t
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute" && t.time_added.is_some()));
        let back = compose(&t, None, true, now);
        assert!(same_taints(&back, std::slice::from_ref(&other)));
        // Kept as they are while the condition stays.
        assert_eq!(compose(&t, Some(UNREACHABLE), true, Timestamp::now()), t);
        // Not admitted (or every node down): NoSchedule only, an earlier NoExecute goes.
        let held = compose(&t, Some(UNREACHABLE), false, now);
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|t| t.effect == "NoSchedule"));
        // Unknown → False swaps the NoExecute key, with a new time.
        let later = Timestamp::now();
        let swapped = compose(&t, Some(NOT_READY), true, later);
        assert!(swapped.iter().any(|t| t.key == NOT_READY
            && t.effect == "NoExecute"
            && t.time_added == Some(Time(later))));
        assert!(!swapped.iter().any(|t| t.key == UNREACHABLE));
    }
}
