//! The DaemonSet loop (upstream's pkg/controller/daemon): one pod per eligible node, placed
//! by the default scheduler through a node-name affinity, RollingUpdate (maxSurge/
//! maxUnavailable) or OnDelete, ControllerRevisions, status.

pub mod placement;
mod rolling;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_slim::Action;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::events::{EventType, Recorder};
use crate::retry_gate::RetryGate;
use crate::{conditions, history, owners, pods, Context};

/// The label naming the revision a daemon pod was made from (its hash).
pub const HASH_LABEL: &str = "controller-revision-hash";
/// The DaemonSet's generation when the pod was made (deprecated upstream, still written).
pub const GENERATION_LABEL: &str = "pod-template-generation";
/// How long a create or delete this loop made is assumed in flight while the informer has
/// not shown it (upstream's expectations).
const EXPECT_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("{0}")]
    Create(String),
}

/// Creates and deletes made but not yet seen by the informer.
#[derive(Default)]
struct Expectations {
    /// (daemon set key, node) → when its pod was created, and that pod's uid.
    created: HashMap<(String, String), (Instant, String)>,
    /// pod uid → when it was deleted.
    deleted: HashMap<String, Instant>,
}

struct Cx {
    ctx: Arc<Context>,
    recorder: Recorder,
    backoff: Backoff,
    gate: RetryGate,
    expect: Mutex<Expectations>,
}

/// Run the loop until aborted.
pub async fn run(ctx: Arc<Context>) {
    let cx = Arc::new(Cx {
        recorder: ctx.recorder("daemonset-controller"),
        backoff: Backoff::new(ctx.opts.sets_backoff_base, Duration::from_secs(300)),
        gate: RetryGate::default(),
        expect: Mutex::new(Expectations::default()),
        ctx: ctx.clone(),
    });
    let pods = ctx.pods().subscribe();
    let nodes = ctx.nodes().subscribe();
    let gated = cx.clone();
    let retries = crate::retry_gate::retries_on::<DaemonSet, _>(
        ctx.admission_changes().subscribe(),
        move |scope| gated.gate.release_in(scope),
    );
    ctx.pods().ready().await;
    ctx.nodes().ready().await;
    let controller = capstan_slim::controller(
        Api::<DaemonSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    controller
        .owns_shared_stream(pods)
        // Any node change may change where daemons belong: every DaemonSet looks again.
        .watches_shared_stream(nodes, move |_node: Arc<Node>| {
            sets.state()
                .iter()
                .map(|ds| ObjectRef::from_obj(&**ds))
                .collect::<Vec<_>>()
        })
        // A quota, limit range or priority class changed: held sets there retry now.
        .reconcile_on(retries)
        .run(reconcile, error_policy, cx)
        .await;
}

fn error_policy(ds: Arc<DaemonSet>, err: &Error, cx: Arc<Cx>) -> Action {
    let key = pods::key(&ds.metadata);
    let (attempts, delay) = cx.backoff.failed(&key);
    tracing::warn!(daemonset = %key, error = %err, attempts, retry_in = ?delay, "daemonset sync failed");
    Action::requeue(delay)
}

fn label<'a>(p: &'a Pod, k: &str) -> &'a str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
        .unwrap_or("")
}

/// One node's view: whether a daemon belongs there and the live daemon pods on it.
pub(crate) struct NodeView {
    pub name: String,
    pub should_run: bool,
    pub should_continue: bool,
    /// Not terminating, not failed; oldest first.
    pub pods: Vec<Pod>,
}

async fn reconcile(ds: Arc<DaemonSet>, cx: Arc<Cx>) -> Result<Action, Error> {
    let key = pods::key(&ds.metadata);
    // Woken by its own failure report (or a pod) before the retry is due: wait for it.
    if let Some(wait) = cx.gate.wait(&key, ds.metadata.generation) {
        return Ok(Action::requeue(wait));
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let client = cx.ctx.client.clone();
    let owner = owners::controller_ref(&*ds);
    let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let mut collision = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let template_value = serde_json::to_value(&spec.template).unwrap_or_default();
    let (cur, revs) = history::update_revision(
        &rev_api,
        &owner,
        &ns,
        &spec.selector,
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        ds.metadata.annotations.clone(),
        &template_value,
        &mut collision,
    )
    .await?;
    let hash = history::hash_label(&cur).to_string();

    // The set's pods, claimed by selector.
    // (Orphans the selector does not pick are left out before claiming, as claim would.)
    let selector = spec.selector.clone();
    let picks = |p: &Pod| {
        capstan_scheduler::selectors::selector_matches(
            &selector,
            capstan_scheduler::selectors::labels_of(&p.metadata),
        )
    };
    let candidates = cx.ctx.pods().claimable(&ns, &uid, picks);
    let claimed: Vec<Pod> = owners::claim(&pod_api, &owner, false, candidates, picks)
        .await
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();

    // The pod spec daemons run with (tolerations added), to judge nodes by.
    let mut judge = spec.template.spec.clone().unwrap_or_default();
    placement::add_daemon_tolerations(&mut judge);

    let now_i = Instant::now();
    let (deleted_recently, mut failed_pods): (HashSet<String>, Vec<Pod>) = {
        let mut e = cx.expect.lock().unwrap_or_else(|p| p.into_inner());
        e.deleted
            .retain(|_, t| now_i.duration_since(*t) < EXPECT_FOR);
        e.created
            .retain(|_, (t, _)| now_i.duration_since(*t) < EXPECT_FOR);
        (e.deleted.keys().cloned().collect(), Vec::new())
    };
    let mut by_node: HashMap<String, Vec<Pod>> = HashMap::new();
    let mut all_claimed = Vec::new();
    for p in claimed {
        all_claimed.push(p.clone());
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() || deleted_recently.contains(&uid) {
            continue;
        }
        if pods::phase(&p) == "Failed" {
            failed_pods.push(p);
            continue;
        }
        if let Some(n) = placement::target_node(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    // A creation is in flight until the informer shows the pod it made (by uid), not
    // merely some pod on its node: a surge pod beside an old one was otherwise made again
    // by a pass that ran before the informer had it.
    {
        let seen: HashSet<&str> = all_claimed
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        let mut e = cx.expect.lock().unwrap_or_else(|p| p.into_inner());
        e.created.retain(|_, (_, uid)| !seen.contains(uid.as_str()));
    }
    let node_list: Vec<Arc<Node>> = cx.ctx.nodes().store.state();
    let mut views: Vec<NodeView> = node_list
        .iter()
        .map(|n| {
            let nname = n.metadata.name.clone().unwrap_or_default();
            let (should_run, should_continue) = placement::should_run(&judge, n);
            let mut pods = by_node.remove(&nname).unwrap_or_default();
            pods.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
            NodeView {
                name: nname,
                should_run,
                should_continue,
                pods,
            }
        })
        .collect();
    // Pods for nodes that no longer exist go.
    let mut to_delete: Vec<Pod> = by_node.into_values().flatten().collect();
    // Failed daemons are replaced (upstream deletes them; a new one is made next pass).
    for p in failed_pods {
        cx.recorder
            .record(
                &*ds,
                EventType::Warning,
                "FailedDaemonPod",
                &format!(
                    "Found failed daemon pod {ns}/{} on node {}, will try to kill it",
                    p.metadata.name.as_deref().unwrap_or(""),
                    placement::target_node(&p).unwrap_or_default()
                ),
            )
            .await;
        to_delete.push(p);
    }

    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let desired = views.iter().filter(|v| v.should_run).count() as i32;
    let (max_surge, max_unavailable) = if rolling {
        rolling::limits(strategy.rolling_update.as_ref(), desired)
    } else {
        (0, 1)
    };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();

    // Which nodes need a pod, which pods must go (upstream's podsShouldBeOnNode).
    let mut create_on: Vec<String> = Vec::new();
    let pending_for = |node: &str| {
        let e = cx.expect.lock().unwrap_or_else(|p| p.into_inner());
        e.created.contains_key(&(key.clone(), node.to_string()))
    };
    for v in &mut views {
        if v.should_run {
            if v.pods.is_empty() {
                if !pending_for(&v.name) {
                    create_on.push(v.name.clone());
                }
            } else if v.pods.len() > 1 {
                let keep = rolling::keep_on_node(&v.pods, &hash, max_surge > 0, min_ready, now);
                let mut kept = Vec::new();
                for (i, p) in v.pods.drain(..).enumerate() {
                    if keep.contains(&i) {
                        kept.push(p);
                    } else {
                        to_delete.push(p);
                    }
                }
                v.pods = kept;
            }
        } else if !v.should_continue {
            to_delete.append(&mut v.pods);
        }
    }

    // Rolling update: which old pods go now and which nodes get a surge pod.
    if rolling {
        let pending: HashSet<String> = {
            let e = cx.expect.lock().unwrap_or_else(|p| p.into_inner());
            e.created
                .keys()
                .filter(|(k, _)| *k == key)
                .map(|(_, n)| n.clone())
                .collect()
        };
        let limits = rolling::Limits {
            max_surge,
            max_unavailable,
            min_ready,
        };
        let plan = rolling::plan(&views, &hash, &limits, &pending, now);
        to_delete.extend(plan.delete);
        create_on.extend(plan.surge_on);
    }

    // Deletions first: an old pod goes because its node's new pod is available, so removing
    // it first never leaves a node without a daemon, while creating a surge pod on the next
    // node first showed one pod more than maxSurge allows until the deletion followed.
    for p in &to_delete {
        delete_pod(&cx, &ds, &pod_api, p).await?;
    }
    if let Err(e) = create_pods(&cx, &ds, &owner, &hash, &create_on).await {
        return failed(&cx, &ds, e).await;
    }

    // Status (upstream's updateDaemonSetStatus), counting each eligible node's newest pod.
    let deleted: HashSet<String> = to_delete
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: Some(collision)
            .filter(|c| *c > 0)
            .or(ds.status.as_ref().and_then(|s| s.collision_count)),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut updated, mut ready, mut available) = (0, 0, 0);
    let mut wait_for_available: Option<i64> = None;
    for v in &views {
        let live: Vec<&Pod> = v
            .pods
            .iter()
            .filter(|p| !deleted.contains(p.metadata.uid.as_deref().unwrap_or("")))
            .collect();
        if v.should_run {
            status.desired_number_scheduled += 1;
            if let Some(p) = live
                .iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
            {
                status.current_number_scheduled += 1;
                if pods::is_ready(p) {
                    ready += 1;
                    if pods::is_available(p, min_ready, now) {
                        available += 1;
                    } else if let Some(since) = pods::ready_since(p) {
                        let left = since.as_second() + i64::from(min_ready) - now.as_second();
                        wait_for_available = Some(wait_for_available.map_or(left, |w| w.min(left)));
                    }
                }
                if label(p, HASH_LABEL) == hash {
                    updated += 1;
                }
            }
        } else if !live.is_empty() {
            status.number_misscheduled += 1;
        }
    }
    status.number_ready = ready;
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    status.number_unavailable = Some(status.desired_number_scheduled - available);
    // This pass made every pod it wanted: no failure to report.
    if let Some(conds) = status.conditions.as_mut() {
        conditions::remove(conds, crate::retry_gate::FAILURE);
    }
    if ds.status.as_ref() != Some(&status) {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }

    // History: keep revisions live pods run, and the newest ones up to the limit.
    let mut live: HashSet<String> = HashSet::new();
    let hashes: HashSet<&str> = all_claimed.iter().map(|p| label(p, HASH_LABEL)).collect();
    for r in &revs {
        if hashes.contains(history::hash_label(r)) || r.metadata.name == cur.metadata.name {
            live.insert(r.metadata.name.clone().unwrap_or_default());
        }
    }
    history::truncate(
        &rev_api,
        &revs,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    cx.backoff.reset(&key);
    cx.gate.release(&key);
    Ok(match wait_for_available {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::await_change(),
    })
}

/// Pods could not be made: the shared "promise" report (`retry_gate::report_failure`).
async fn failed(cx: &Cx, ds: &DaemonSet, e: Error) -> Result<Action, Error> {
    let api: Api<DaemonSet> = Api::namespaced(
        cx.ctx.client.clone(),
        ds.metadata.namespace.as_deref().unwrap_or(""),
    );
    let conds = ds
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let delay =
        crate::retry_gate::report_failure(&api, &ds.metadata, conds, &cx.backoff, &cx.gate, &e)
            .await?;
    Ok(Action::requeue(delay))
}

/// The daemon pod for `node` (upstream's NewPod + the revision labels).
fn new_pod(ds: &DaemonSet, owner: &OwnerReference, hash: &str, node: &str) -> pods::NewPod {
    let spec = ds.spec.clone().unwrap_or_default();
    let mut pod = pods::from_template(
        &spec.template,
        owner.clone(),
        ds.metadata.name.as_deref().unwrap_or(""),
    );
    pod.metadata.namespace = ds.metadata.namespace.clone();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.to_string());
    labels.insert(
        GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(0).to_string(),
    );
    let pspec = pod.spec.get_or_insert_with(Default::default);
    placement::add_daemon_tolerations(pspec);
    placement::pin_to_node(pspec, node);
    pod
}

/// Create the pods in slow-start batches (1, 2, 4 …), as upstream; a failing batch ends it.
async fn create_pods(
    cx: &Cx,
    ds: &DaemonSet,
    owner: &OwnerReference,
    hash: &str,
    nodes: &[String],
) -> Result<(), Error> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let key = pods::key(&ds.metadata);
    let mut failures = Vec::new();
    let results = crate::slow_start::batches(nodes, |node| {
        let pod = new_pod(ds, owner, hash, node);
        let (client, ns) = (&cx.ctx.client, &ns);
        async move {
            pods::create(client, ns, &PostParams::default(), &pod)
                .await
                .map_err(|e| format!("node {node}: {e}"))
        }
    })
    .await;
    for (node, r) in nodes.iter().zip(results) {
        match r {
            Ok(p) => {
                cx.expect
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .created
                    .insert(
                        (key.clone(), node.clone()),
                        (Instant::now(), p.metadata.uid.clone().unwrap_or_default()),
                    );
                cx.recorder
                    .record(
                        ds,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or("")),
                    )
                    .await;
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    let msg = format!("Error creating: {}", failures.join("; "));
    cx.recorder
        .record(ds, EventType::Warning, "FailedCreate", &msg)
        .await;
    Err(Error::Create(msg))
}

async fn delete_pod(cx: &Cx, ds: &DaemonSet, api: &Api<Pod>, p: &Pod) -> Result<(), Error> {
    let pname = p.metadata.name.as_deref().unwrap_or("");
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pname, &dp).await {
        Ok(_) => {
            if let Some(uid) = p.metadata.uid.clone() {
                cx.expect
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .deleted
                    .insert(uid, Instant::now());
            }
            cx.recorder
                .record(
                    ds,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pname}"),
                )
                .await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
