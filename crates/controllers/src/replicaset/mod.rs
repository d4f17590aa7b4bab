//! The ReplicaSet loop (upstream `replicaset` and `replicationcontroller` controllers: one
//! code path over both kinds): claim pods by selector, create or delete to the desired count
//! in slow-start batches, report status and `ReplicaFailure`, retry refused creates with
//! back-off.

mod delete_order;
mod expectations;
pub mod kind;

use std::sync::Arc;
use std::time::Duration;

use capstan_scheduler::selectors::labels_of;
use capstan_slim::Action;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::events::{EventType, Recorder};
use crate::retry_gate::RetryGate;
use crate::{owners, pods};
use expectations::Expectations;
use kind::{Counts, Failure, ReplicaKind};

/// Most pods created or deleted by one sync (upstream's BurstReplicas).
const BURST_REPLICAS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status of {key}: {source}")]
    Status { key: String, source: kube::Error },
}

/// The loop's state, shared by its reconciles.
pub struct Loop<K: ReplicaKind> {
    client: kube::Client,
    ctx: Arc<Context>,
    pods: Store<Pod>,
    owners: Store<K>,
    expectations: Expectations,
    backoff: Backoff,
    /// Per key: when the next create/delete may be tried after a failure, for the
    /// generation that failed (a spec change, or an admission change in its namespace,
    /// retries at once: the cause may be gone).
    gate: RetryGate,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Context>) {
    run_kind::<ReplicaSet>(ctx).await
}

pub async fn run_rc(ctx: Arc<Context>) {
    run_kind::<ReplicationController>(ctx).await
}

async fn run_kind<K: ReplicaKind>(ctx: Arc<Context>) {
    let shared = ctx.pods();
    shared.ready().await;
    let controller = capstan_slim::controller(
        Api::<K>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let owners_store = controller.store();
    let state = Arc::new(Loop {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        pods: shared.store.clone(),
        owners: owners_store.clone(),
        expectations: Expectations::default(),
        backoff: Backoff::new(ctx.opts.replica_backoff_base, ctx.opts.replica_backoff_max),
        gate: RetryGate::default(),
        recorder: ctx.recorder(K::COMPONENT),
    });
    let mapper_state = state.clone();
    let gate_state = state.clone();
    let retries =
        crate::retry_gate::retries_on::<K, _>(ctx.admission_changes().subscribe(), move |scope| {
            gate_state.gate.release_in(scope)
        });
    controller
        .watches_shared_stream(shared.subscribe(), move |pod: Arc<Pod>| {
            let owners = owners::concerned(&pod.metadata, &mapper_state.owners, |o: &K| {
                o.selects(labels_of(&pod.metadata))
            });
            // One of its own pods seen: an expectation met.
            if owners::controller_of(&pod.metadata).is_some_and(|r| r.kind == K::kind(&())) {
                let ns = pod.namespace().unwrap_or_default();
                for o in &owners {
                    mapper_state
                        .expectations
                        .observed(&format!("{ns}/{}", o.name), &pod.name_any());
                }
            }
            owners
        })
        .reconcile_on(retries)
        .run(reconcile::<K>, error_policy::<K>, state)
        .await;
}

fn error_policy<K: ReplicaKind>(obj: Arc<K>, err: &Error, state: Arc<Loop<K>>) -> Action {
    let key = pods::key(obj.meta());
    let (attempts, delay) = state.backoff.failed(&format!("{key}#status"));
    tracing::warn!(%key, attempts, error = %err, "replica sync failed; retrying");
    Action::requeue(delay)
}

async fn reconcile<K: ReplicaKind>(owner: Arc<K>, state: Arc<Loop<K>>) -> Result<Action, Error> {
    let meta = owner.meta();
    let key = pods::key(meta);
    let ns = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    if state.owners.get(&ObjectRef::from_obj(&*owner)).is_none() {
        state.expectations.forget(&key);
        state.backoff.reset(&key);
        state.gate.release(&key);
        return Ok(Action::await_change());
    }
    let deleting = meta.deletion_timestamp.is_some();
    let generation = meta.generation.unwrap_or(0);

    // Candidates: active pods of the namespace this owner controls or may adopt.
    let candidates: Vec<Arc<Pod>> = state
        .ctx
        .pods()
        .claimable(&ns, &uid, |p| owner.selects(labels_of(&p.metadata)))
        .into_iter()
        .filter(|p| pods::is_active(p))
        .collect();
    let pod_api: Api<Pod> = Api::namespaced(state.client.clone(), &ns);
    let oref = owners::controller_ref(&*owner);
    let claimed = owners::claim(&pod_api, &oref, deleting, candidates, |p| {
        owner.selects(labels_of(&p.metadata))
    })
    .await;

    // Manage replicas unless earlier creates/deletes are still unseen or a failure's
    // back-off has not run out (for the same spec).
    let mut failure: Failure = None;
    let mut requeue: Option<Duration> = None;
    let backing_off = state.gate.wait(&key, meta.generation);
    if let Some(wait) = backing_off {
        // Keep showing the failure until the retry says otherwise.
        failure = current_failure(&*owner);
        requeue = Some(wait);
    } else if !deleting && state.expectations.satisfied(&key, &ns, &state.pods) {
        if let Some((reason, message)) = manage(&*owner, &key, &claimed, &pod_api, &state).await {
            let (attempts, delay) = state.backoff.failed(&key);
            let shown = crate::retry_gate::retry_message(&message, attempts, delay);
            state.gate.hold(&key, meta.generation, delay);
            failure = Some((reason, shown));
            requeue = Some(delay);
        } else {
            state.backoff.reset(&key);
            state.gate.release(&key);
        }
    }

    // Status from the pods claimed at the start of this sync (upstream's calculateStatus).
    let now = Timestamp::now();
    let min_ready = owner.min_ready_seconds();
    let labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut counts = Counts {
        replicas: claimed.len() as i32,
        observed_generation: generation,
        ..Counts::default()
    };
    let mut next_available: Option<i64> = None;
    for p in &claimed {
        let have = labels_of(&p.metadata);
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            counts.fully_labeled += 1;
        }
        if let Some(since) = pods::ready_since(p) {
            counts.ready += 1;
            if pods::is_available(p, min_ready, now) {
                counts.available += 1;
            } else {
                let at = since.as_second() + i64::from(min_ready);
                next_available = Some(next_available.map_or(at, |n| n.min(at)));
            }
        }
    }
    if let Some(status) = owner.status_update(&counts, &failure) {
        let api: Api<K> = Api::namespaced(state.client.clone(), &ns);
        api.patch_status(
            &owner.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|source| Error::Status {
            key: key.clone(),
            source,
        })?;
    }
    state.backoff.reset(&format!("{key}#status"));
    // Wake when the next pod becomes available (minReadySeconds), not on a timer.
    if let Some(at) = next_available {
        let wait = Duration::from_millis(((at - now.as_second()).max(0) as u64) * 1000 + 100);
        requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The `ReplicaFailure` condition as stored, for keeping it while backing off.
fn current_failure<K: ReplicaKind>(owner: &K) -> Failure {
    let v = serde_json::to_value(owner).ok()?;
    let c = v
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ReplicaFailure" && c["status"] == "True")?;
    Some((
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

/// Create or delete pods towards the desired count. Returns the failure (reason, the
/// API's message) if any create or delete was refused.
async fn manage<K: ReplicaKind>(
    owner: &K,
    key: &str,
    claimed: &[Arc<Pod>],
    api: &Api<Pod>,
    state: &Loop<K>,
) -> Option<(String, String)> {
    let diff = claimed.len() as i64 - i64::from(owner.replicas());
    if diff < 0 {
        let want = ((-diff) as usize).min(BURST_REPLICAS);
        let template = owner.template()?;
        let pod = pods::from_template(template, owners::controller_ref(owner), &owner.name_any());
        let pp = PostParams::default();
        // Slow start: stop at the first failing batch so a quota or validation refusal
        // costs a few requests, not hundreds.
        let slots = vec![(); want];
        let ns = owner.namespace().unwrap_or_default();
        let results =
            crate::slow_start::batches(&slots, |_| pods::create(&state.client, &ns, &pp, &pod))
                .await;
        let mut err: Option<kube::Error> = None;
        for r in results {
            match r {
                Ok(created) => {
                    let name = created.name_any();
                    state.expectations.expect_add(key, &name);
                    state
                        .recorder
                        .record(
                            owner,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        )
                        .await;
                }
                Err(e) => err = Some(e),
            }
        }
        if let Some(e) = err {
            let msg = generated_name_as_prefix(&api_message(&e), &pod);
            tracing::info!(%key, error = %msg, "pod create refused");
            state
                .recorder
                .record(
                    owner,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {msg}"),
                )
                .await;
            return Some(("FailedCreate".into(), msg));
        }
        None
    } else if diff > 0 {
        let n = (diff as usize).min(BURST_REPLICAS);
        let victims: Vec<Arc<Pod>> = delete_order::order_for_deletion(claimed.to_vec(), claimed)
            .into_iter()
            .take(n)
            .collect();
        for v in &victims {
            state.expectations.expect_delete(key, &v.name_any());
        }
        let results = futures::future::join_all(victims.iter().map(|v| async move {
            (
                v.name_any(),
                api.delete(&v.name_any(), &DeleteParams::default()).await,
            )
        }))
        .await;
        let mut failure = None;
        for (name, r) in results {
            match r {
                Ok(_) => {
                    state
                        .recorder
                        .record(
                            owner,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        )
                        .await
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    state.expectations.forget_delete(key, &name);
                    let msg = api_message(&e);
                    state
                        .recorder
                        .record(
                            owner,
                            EventType::Warning,
                            "FailedDelete",
                            &format!("Error deleting: {msg}"),
                        )
                        .await;
                    failure = Some(("FailedDelete".to_string(), msg));
                }
            }
        }
        failure
    } else {
        None
    }
}

/// Upstream's admission errors name a pod being created by its `generateName` (the name
/// is generated after admission); capstan's API server names the generated pod. Word it
/// as upstream does, so repeats of one refusal read the same and aggregate into one Event.
fn generated_name_as_prefix(msg: &str, pod: &pods::NewPod) -> String {
    let Some(prefix) = pod.metadata.generate_name.as_deref() else {
        return msg.to_string();
    };
    let head = format!("pods \"{prefix}");
    match msg
        .strip_prefix(&head)
        .and_then(|rest| rest.split_once('"'))
    {
        Some((suffix, tail))
            if suffix.len() == 5 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!("{head}\"{tail}")
        }
        _ => msg.to_string(),
    }
}

/// The API's own message for a refused request (what upstream shows in the condition).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_generate_name_as_upstream() {
        let pod: pods::NewPod =
            serde_json::from_value(json!({"metadata": {"generateName": "bad-"}})).unwrap();
        assert_eq!(
            generated_name_as_prefix(r#"pods "bad-x7k2p" is forbidden: exceeded quota"#, &pod),
            r#"pods "bad-" is forbidden: exceeded quota"#
        );
        assert_eq!(
            generated_name_as_prefix(r#"pods "other" is forbidden: x"#, &pod),
            r#"pods "other" is forbidden: x"#
        );
    }
}
