//! The StatefulSet loop (upstream's pkg/controller/statefulset): ordinal pods and their
//! claims, OrderedReady/Parallel scaling, RollingUpdate (partition, maxUnavailable)/OnDelete.

pub mod identity;
mod revisions;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::events::{EventType, Recorder};
use crate::retry_gate::RetryGate;
use crate::{conditions, history, owners, pods, Context};
use identity::{ordinal_of, revision_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("create Pod {pod} in StatefulSet {set} failed error: {source}")]
    CreatePod {
        pod: String,
        set: String,
        source: kube::Error,
    },
    #[error("create Claim {claim} for Pod {pod} in StatefulSet {set} failed error: {source}")]
    CreateClaim {
        claim: String,
        pod: String,
        set: String,
        source: kube::Error,
    },
    #[error("revision {0} holds no pod template")]
    BadRevision(String),
}

struct Cx {
    ctx: Arc<Context>,
    recorder: Recorder,
    backoff: Backoff,
    gate: RetryGate,
}

/// Run the loop until aborted.
pub async fn run(ctx: Arc<Context>) {
    let cx = Arc::new(Cx {
        recorder: ctx.recorder("statefulset-controller"),
        backoff: Backoff::new(ctx.opts.sets_backoff_base, Duration::from_secs(300)),
        gate: RetryGate::default(),
        ctx: ctx.clone(),
    });
    let pods = ctx.pods().subscribe();
    let gated = cx.clone();
    let retries = crate::retry_gate::retries_on::<StatefulSet, _>(
        ctx.admission_changes().subscribe(),
        move |scope| gated.gate.release_in(scope),
    );
    ctx.pods().ready().await;
    capstan_slim::controller(
        Api::<StatefulSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns_shared_stream(pods)
    // A quota, limit range or priority class changed: held sets there retry now.
    .reconcile_on(retries)
    .run(reconcile, error_policy, cx)
    .await;
}

fn error_policy(set: Arc<StatefulSet>, err: &Error, cx: Arc<Cx>) -> Action {
    let key = pods::key(&set.metadata);
    let (attempts, delay) = cx.backoff.failed(&key);
    tracing::warn!(statefulset = %key, error = %err, attempts, retry_in = ?delay, "statefulset sync failed");
    Action::requeue(delay)
}

/// Running with a Ready condition (upstream's isRunningAndReady).
fn running_ready(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p)
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn created(p: &Pod) -> bool {
    !pods::phase(p).is_empty()
}

/// `maxUnavailable` of the rolling update against `replicas` (percentages round down, at
/// least 1, as upstream's getStatefulSetMaxUnavailable).
fn max_unavailable(v: Option<&IntOrString>, replicas: i32) -> i32 {
    let n = match v {
        None => 1,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(100);
            (pct * i64::from(replicas) / 100) as i32
        }
    };
    n.max(1)
}

/// What a pass did, so the status can be computed from the world as it now is.
struct World {
    /// Pods in ordinal range, index = ordinal - start.
    slots: Vec<Option<Pod>>,
    /// Pods outside it, highest ordinal first.
    condemned: Vec<Pod>,
}

impl World {
    fn all(&self) -> impl Iterator<Item = &Pod> {
        self.slots.iter().flatten().chain(self.condemned.iter())
    }
}

async fn reconcile(set: Arc<StatefulSet>, cx: Arc<Cx>) -> Result<Action, Error> {
    let key = pods::key(&set.metadata);
    // Woken by its own failure report (or a pod) before the retry is due: wait for it.
    if let Some(wait) = cx.gate.wait(&key, set.metadata.generation) {
        return Ok(Action::requeue(wait));
    }
    if set.metadata.deletion_timestamp.is_some() {
        // Dependents are the garbage collector's (upstream does nothing here either).
        return Ok(Action::await_change());
    }
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let client = cx.ctx.client.clone();
    let owner = owners::controller_ref(&*set);
    let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let mut collision = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let revs = revisions::sync(&rev_api, &set, &owner, &mut collision).await?;
    let (current, update) = (revs.current.clone(), revs.update.clone());
    let current_template: PodTemplateSpec = history::template_of(&current)
        .and_then(|t| capstan_slim::from_json(&t).ok())
        .ok_or_else(|| Error::BadRevision(current.metadata.name.clone().unwrap_or_default()))?;
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let update_name = update.metadata.name.clone().unwrap_or_default();

    // The set's pods: owned ones and orphans its selector matches whose names are its own.
    // (Orphans it would not adopt are left out before claiming, as claim would.)
    let selector = spec.selector.clone();
    let picks = |p: &Pod| {
        capstan_scheduler::selectors::selector_matches(
            &selector,
            capstan_scheduler::selectors::labels_of(&p.metadata),
        ) && ordinal_of(&name, p.metadata.name.as_deref().unwrap_or("")).is_some()
    };
    let candidates = cx.ctx.pods().claimable(&ns, &uid, picks);
    let claimed: Vec<Pod> = owners::claim(&pod_api, &owner, false, candidates, picks)
        .await
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();

    let start = identity::start_ordinal(&set);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let mut world = World {
        slots: vec![None; replicas as usize],
        condemned: Vec::new(),
    };
    for p in claimed {
        let ord = ordinal_of(&name, p.metadata.name.as_deref().unwrap_or("")).unwrap_or(-1);
        if ord >= start && ord < start + replicas {
            world.slots[(ord - start) as usize] = Some(p);
        } else {
            world.condemned.push(p);
        }
    }
    world.condemned.sort_by_key(|p| {
        std::cmp::Reverse(ordinal_of(&name, p.metadata.name.as_deref().unwrap_or("")))
    });

    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let status_current = set
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    let now = Timestamp::now();
    let mut requeue: Option<Duration> = None;
    let mut blocked = false;

    // Create, recreate and wait, in ordinal order.
    for i in 0..world.slots.len() {
        let ord = start + i as i32;
        match world.slots[i].clone() {
            None => {
                // Ordinals below the partition (or, without one, below the current count)
                // keep the current revision (upstream's newVersionedStatefulSetPod).
                let keep_current = current_name != update_name
                    && rolling
                    && match strategy.rolling_update.as_ref() {
                        Some(r) => ord < start + r.partition.unwrap_or(0),
                        None => ord < start + status_current,
                    };
                let (template, rev) = if keep_current {
                    (&current_template, &current_name)
                } else {
                    (&spec.template, &update_name)
                };
                let pod = identity::new_pod(&set, template, owner.clone(), ord, rev);
                let made = match create_pod(&cx, &set, &owner, pod, ord).await {
                    Ok(made) => made,
                    Err(e) => return failed(&cx, &set, e).await,
                };
                world.slots[i] = Some(made);
                if monotonic {
                    blocked = true;
                    break;
                }
            }
            Some(p) if !terminating(&p) && pods::is_terminal(&p) => {
                let failed = pods::phase(&p) == "Failed";
                let pname = p.metadata.name.clone().unwrap_or_default();
                cx.recorder
                    .record(
                        &*set,
                        EventType::Warning,
                        if failed {
                            "RecreatingFailedPod"
                        } else {
                            "RecreatingTerminatedPod"
                        },
                        &format!(
                            "StatefulSet {ns}/{name} is recreating {} Pod {pname}",
                            if failed { "failed" } else { "terminated" }
                        ),
                    )
                    .await;
                delete_pod(&cx, &set, &pod_api, &p).await?;
                world.slots[i] = Some(marked_deleted(p));
                if monotonic {
                    blocked = true;
                    break;
                }
            }
            Some(p) if terminating(&p) || !running_ready(&p) => {
                if monotonic {
                    tracing::debug!(statefulset = %key, pod = ?p.metadata.name, "waiting for Pod to be Running and Ready");
                    blocked = true;
                    break;
                }
            }
            Some(p) => {
                if !pods::is_available(&p, min_ready, now) && monotonic {
                    let since = pods::ready_since(&p).map(|t| t.as_second()).unwrap_or(0);
                    let left = (since + i64::from(min_ready) - now.as_second()).max(1);
                    requeue = Some(Duration::from_secs(left as u64));
                    blocked = true;
                    break;
                }
                if !identity::labels_match(&p, ord) {
                    fix_identity(&pod_api, &p, ord).await?;
                }
            }
        }
    }

    // Scale down, highest ordinal first; one at a time when ordered.
    if !blocked {
        let unhealthy = world
            .all()
            .filter(|p| !running_ready(p) || terminating(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>();
        for j in 0..world.condemned.len() {
            let p = world.condemned[j].clone();
            if terminating(&p) {
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            }
            let pname = p.metadata.name.clone().unwrap_or_default();
            if monotonic && unhealthy.iter().any(|u| *u != pname) {
                blocked = true;
                break;
            }
            release_claims_on_scale_down(&cx, &set, &p).await?;
            delete_pod(&cx, &set, &pod_api, &p).await?;
            world.condemned[j] = marked_deleted(p);
            if monotonic {
                blocked = true;
                break;
            }
        }
    }

    // Rolling update: replace pods not at the update revision, highest ordinal first,
    // down to the partition, keeping at most maxUnavailable pods unavailable.
    if !blocked && rolling {
        let budget_max = max_unavailable(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref()),
            replicas,
        );
        let mut unavailable = world
            .slots
            .iter()
            .filter(|s| {
                s.as_ref().is_none_or(|p| {
                    terminating(p) || !running_ready(p) || !pods::is_available(p, min_ready, now)
                })
            })
            .count() as i32;
        for i in (0..world.slots.len()).rev() {
            let ord = start + i as i32;
            if ord < partition {
                break;
            }
            let Some(p) = world.slots[i].clone() else {
                continue;
            };
            if revision_of(&p) == update_name || terminating(&p) {
                continue;
            }
            let available = running_ready(&p) && pods::is_available(&p, min_ready, now);
            if available && unavailable >= budget_max {
                break;
            }
            delete_pod(&cx, &set, &pod_api, &p).await?;
            world.slots[i] = Some(marked_deleted(p));
            if available {
                unavailable += 1;
            }
        }
    }

    // Status from the world as this pass left it.
    let mut status = compute_status(
        &set,
        &world,
        &current_name,
        &update_name,
        collision,
        min_ready,
        rolling,
        now,
    );
    // This pass made every pod it wanted: no failure to report.
    if let Some(conds) = status.conditions.as_mut() {
        conditions::remove(conds, crate::retry_gate::FAILURE);
    }
    if set.status.as_ref() != Some(&status) {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }

    // History beyond revisionHistoryLimit goes, except revisions pods still run.
    let mut live: HashSet<String> = world.all().map(|p| revision_of(p).to_string()).collect();
    live.insert(current_name.clone());
    live.insert(update_name.clone());
    history::truncate(
        &rev_api,
        &revs.all,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    cx.backoff.reset(&key);
    cx.gate.release(&key);
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Pods could not be made: the shared "promise" report (`retry_gate::report_failure`).
async fn failed(cx: &Cx, set: &StatefulSet, e: Error) -> Result<Action, Error> {
    let api: Api<StatefulSet> = Api::namespaced(
        cx.ctx.client.clone(),
        set.metadata.namespace.as_deref().unwrap_or(""),
    );
    let conds = set
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let delay =
        crate::retry_gate::report_failure(&api, &set.metadata, conds, &cx.backoff, &cx.gate, &e)
            .await?;
    Ok(Action::requeue(delay))
}

#[allow(clippy::too_many_arguments)]
fn compute_status(
    set: &StatefulSet,
    world: &World,
    current: &str,
    update: &str,
    collision: i32,
    min_ready: i32,
    rolling: bool,
    now: Timestamp,
) -> StatefulSetStatus {
    let mut s = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: Some(collision),
        current_revision: Some(current.to_string()),
        update_revision: Some(update.to_string()),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut ready, mut available, mut cur, mut upd) = (0, 0, 0, 0);
    for p in world.all() {
        if created(p) {
            s.replicas += 1;
        }
        if running_ready(p) {
            ready += 1;
            if pods::is_available(p, min_ready, now) {
                available += 1;
            }
        }
        if created(p) && !terminating(p) {
            if revision_of(p) == current {
                cur += 1;
            }
            if revision_of(p) == update {
                upd += 1;
            }
        }
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(cur);
    s.updated_replicas = Some(upd);
    // A finished rolling update makes the update revision current (completeRollingUpdate).
    if rolling && upd == s.replicas && ready == s.replicas {
        s.current_replicas = Some(upd);
        s.current_revision = Some(update.to_string());
    }
    s
}

/// The pod as it will be once the delete is seen (counted as terminating this pass).
fn marked_deleted(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    p
}

/// Create the claims of `ordinal` (an existing one is kept) and then its pod.
async fn create_pod(
    cx: &Cx,
    set: &StatefulSet,
    owner: &OwnerReference,
    pod: pods::NewPod,
    ordinal: i32,
) -> Result<Pod, Error> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(cx.ctx.client.clone(), &ns);
    let delete_with_set = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    for mut claim in identity::claims(set, ordinal) {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        if delete_with_set {
            // whenDeleted: Delete — the set owns the claim, so the garbage collector
            // removes it with the set.
            claim.metadata.owner_references = Some(vec![owner.clone()]);
        }
        match pvc_api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                cx.recorder
                    .record(
                        set,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!(
                            "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                        ),
                    )
                    .await
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                let e = Error::CreateClaim {
                    claim: claim_name,
                    pod: pod_name,
                    set: set_name,
                    source,
                };
                cx.recorder
                    .record(set, EventType::Warning, "FailedCreate", &e.to_string())
                    .await;
                return Err(e);
            }
        }
    }
    match pods::create(&cx.ctx.client, &ns, &PostParams::default(), &pod).await {
        Ok(made) => {
            tracing::debug!(statefulset = %format!("{ns}/{set_name}"), pod = %pod_name, "created");
            cx.recorder
                .record(
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                )
                .await;
            Ok(made)
        }
        // Already there (the informer had not seen it yet): wait for it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(marked_deleted(pods::as_cached(&pod))),
        Err(source) => {
            let e = Error::CreatePod {
                pod: pod_name,
                set: set_name,
                source,
            };
            cx.recorder
                .record(set, EventType::Warning, "FailedCreate", &e.to_string())
                .await;
            Err(e)
        }
    }
}

async fn delete_pod(cx: &Cx, set: &StatefulSet, api: &Api<Pod>, p: &Pod) -> Result<(), Error> {
    let set_name = set.metadata.name.as_deref().unwrap_or("");
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
            cx.recorder
                .record(
                    set,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("delete Pod {pname} in StatefulSet {set_name} successful"),
                )
                .await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            cx.recorder
                .record(
                    set,
                    EventType::Warning,
                    "FailedDelete",
                    &format!("delete Pod {pname} in StatefulSet {set_name} failed error: {e}"),
                )
                .await;
            Err(e.into())
        }
    }
}

/// whenScaled: Delete — a condemned pod becomes an owner of its claims, so they go with it
/// (the garbage collector's work once the pod is gone).
async fn release_claims_on_scale_down(cx: &Cx, set: &StatefulSet, p: &Pod) -> Result<(), Error> {
    let when_scaled = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref());
    if when_scaled != Some("Delete") {
        return Ok(());
    }
    let name = set.metadata.name.as_deref().unwrap_or("");
    let Some(ord) = ordinal_of(name, p.metadata.name.as_deref().unwrap_or("")) else {
        return Ok(());
    };
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(cx.ctx.client.clone(), &ns);
    let pod_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    };
    for claim in identity::claims(set, ord) {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"ownerReferences": [pod_ref]}});
        match pvc_api
            .patch(&cname, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Put back the identity labels a user removed (upstream's updateIdentity on a live pod;
/// hostname and subdomain are immutable on a pod, so only labels are restored).
async fn fix_identity(api: &Api<Pod>, p: &Pod, ord: i32) -> Result<(), Error> {
    let pname = p.metadata.name.clone().unwrap_or_default();
    let patch = json!({"metadata": {"labels": {
        identity::POD_NAME_LABEL: pname,
        identity::POD_INDEX_LABEL: ord.to_string(),
    }}});
    api.patch(&pname, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_rounds_down_and_is_at_least_one() {
        assert_eq!(max_unavailable(None, 10), 1);
        assert_eq!(max_unavailable(Some(&IntOrString::Int(3)), 10), 3);
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("25%".into())), 10),
            2
        );
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("10%".into())), 3),
            1
        );
        assert_eq!(max_unavailable(Some(&IntOrString::Int(0)), 3), 1);
    }
}
