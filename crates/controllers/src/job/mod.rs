//! The Job controller (upstream pkg/controller/job): runs a Job's pods to `completions`
//! (NonIndexed or Indexed) `parallelism` at a time, counts every finished pod exactly once
//! through the `batch.kubernetes.io/job-tracking` finalizer and `uncountedTerminatedPods`,
//! backs off after failures, and finishes the Job with upstream's conditions.

mod backoff_record;
mod expectations;
pub mod failure_policy;
pub mod indexes;
mod orphans;
mod pod_control;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_slim::Action;
use capstan_slim::Controller;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::events::Recorder;
use crate::retry_gate::RetryGate;

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Who manages a Job when `spec.managedBy` is unset or names this controller.
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream's ceiling for the pod-failure back-off (MaxJobPodFailureBackOff).
pub const POD_FAILURE_BACKOFF_CAP: Duration = Duration::from_secs(360);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// A Job whose Complete or Failed condition is True.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The type (`Complete`/`Failed`) and time of a finished Job's terminal condition.
pub fn finished_condition(job: &Job) -> Option<&k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// The loop's state across syncs.
pub struct JobLoop {
    ctx: Arc<Context>,
    recorder: Recorder,
    expectations: expectations::Expectations,
    /// Pod-failure back-off per Job key (upstream's backoff store).
    records: Mutex<HashMap<String, backoff_record::Record>>,
    /// Failures noted in an Event per Job key, so one back-off is told once.
    told: Mutex<HashMap<String, u32>>,
    /// Back-off of syncs that failed (API errors), 1 s doubling to 60 s as upstream's queue.
    errors: Backoff,
    /// Jobs whose pod creates were refused, retried at once when an admission policy of
    /// their namespace changes (the error back-off holds them otherwise).
    refused: RetryGate,
}

impl JobLoop {
    fn forget(&self, key: &str) {
        self.expectations.forget(key);
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.errors.reset(key);
        self.refused.release(key);
    }
}

pub async fn run(ctx: Arc<Context>) {
    let jobs = ctx.jobs();
    // Subscribe before waiting, so nothing between the first list and the start is missed.
    let job_changes = jobs.subscribe();
    let pod_changes = ctx.pods().subscribe();
    let orphan_pods = ctx.pods().subscribe();
    let orphan_jobs = jobs.subscribe();
    ctx.pods().ready().await;
    jobs.ready().await;
    tracing::debug!("job controller: informers ready");
    let state = Arc::new(JobLoop {
        recorder: ctx.recorder("job-controller"),
        ctx: ctx.clone(),
        expectations: Default::default(),
        records: Mutex::new(HashMap::new()),
        told: Mutex::new(HashMap::new()),
        errors: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        refused: RetryGate::default(),
    });
    let gated = state.clone();
    let retries = crate::retry_gate::retries_on::<Job, _>(
        ctx.admission_changes().subscribe(),
        move |scope| gated.refused.release_in(scope),
    );
    let job_store = jobs.store.clone();
    let controller = Controller::for_shared_stream(job_changes, jobs.store.clone())
        .watches_shared_stream(pod_changes, move |pod: Arc<Pod>| {
            // An orphan pod wakes the running Jobs whose selector picks it (they may adopt it).
            crate::owners::concerned(&pod.metadata, &job_store, |j: &Job| {
                !is_finished(j) && pod_control::selects(j, pod.labels())
            })
        })
        // A quota, limit range or priority class changed: refused Jobs there retry now.
        .reconcile_on(retries)
        // Every Job once at start (another loop may have started the informer earlier).
        .reconcile_all_on(futures::stream::once(async {}))
        .run(reconcile, error_policy, state);
    // Both end together when the loop is stopped (the task holding them is aborted).
    futures::future::join(
        controller,
        orphans::release(ctx.clone(), orphan_pods, orphan_jobs),
    )
    .await;
}

async fn reconcile(job: Arc<Job>, st: Arc<JobLoop>) -> Result<Action, Error> {
    let key = crate::pods::key(&job.metadata);
    let action = sync::sync(&st, &job).await?;
    st.errors.reset(&key);
    st.refused.release(&key);
    Ok(action)
}

fn error_policy(job: Arc<Job>, err: &Error, st: Arc<JobLoop>) -> Action {
    let key = crate::pods::key(&job.metadata);
    if err.is_conflict() {
        // Someone wrote the Job (or we read a stale copy): sync again at once.
        return Action::requeue(Duration::from_millis(100));
    }
    let (attempts, delay) = st.errors.failed(&key);
    tracing::warn!(job = %key, name = %job.name_any(), error = %err, attempts, retry_in = ?delay, "job sync failed");
    Action::requeue(delay)
}
