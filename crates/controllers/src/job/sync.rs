//! One sync of one Job (upstream's syncJob): read the Job and its pods, decide whether it
//! finished, make or remove pods, then count finished pods and write status in upstream's
//! two steps (uncounted uids first, counters once their finalizers are gone).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::ResourceExt;

use super::backoff_record::Record;
use super::failure_policy::{self, Outcome};
use super::{indexes, pod_control, Error, JobLoop, MANAGED_BY, POD_FAILURE_BACKOFF_CAP};
use crate::cached_pod::Pod;
use crate::conditions;
use crate::events::EventType;
use crate::pods::{is_ready, is_terminal, phase};

/// At most this many pod uids wait in `uncountedTerminatedPods` (upstream's MaxUncountedPods).
const MAX_UNCOUNTED: usize = 500;
/// At most this many pods made or removed per sync (upstream's MaxPodCreateDeletePerSync).
const MAX_PER_SYNC: i32 = 500;

/// The condition a finished (or finishing) Job gets.
#[derive(Clone, Debug)]
struct Finish {
    type_: &'static str,
    reason: String,
    message: String,
}

impl Finish {
    fn new(type_: &'static str, reason: &str, message: &str) -> Self {
        Finish {
            type_,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn cond_true<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_deref()
        .and_then(|c| conditions::get(c, type_))
        .filter(|c| c.status == "True")
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or("")
}

/// Everything one sync computes, as upstream's syncJobCtx.
struct Ctx<'a> {
    job: &'a Job,
    spec: &'a JobSpec,
    key: String,
    pods: Vec<Arc<Pod>>,
    indexed: bool,
    completions: i32,
    /// Pods whose finalizer removal the informer has not shown yet.
    expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    succeeded: i32,
    active: i32,
    ready: i32,
    terminating: i32,
    prev_succeeded_ix: BTreeSet<i32>,
    succeeded_ix: BTreeSet<i32>,
    failed_ix: Option<BTreeSet<i32>>,
    finished: Option<Finish>,
    record: Record,
    requeue: Option<Duration>,
}

impl Ctx<'_> {
    fn tracked(&self, p: &Pod) -> bool {
        super::has_tracking_finalizer(p) && !self.expected_rm.contains(uid(p))
    }
    fn index(&self, p: &Pod) -> Option<i32> {
        indexes::of(p, self.completions)
    }
    fn valid_index(&self, p: &Pod) -> bool {
        !self.indexed || self.index(p).is_some()
    }
    fn policy_counts(&self, p: &Pod) -> bool {
        self.spec
            .pod_failure_policy
            .as_ref()
            .is_none_or(|pol| failure_policy::evaluate(pol, p).counts())
    }
    fn wait_for(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

pub async fn sync(st: &JobLoop, cached: &Job) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let key = crate::pods::key(&cached.metadata);
    let api: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    // The cache may lag our own status writes; counting from a stale status would count
    // pods twice, so every sync starts from the stored Job.
    let Some(mut job) = api.get_opt(&name).await? else {
        st.forget(&key);
        return Ok(Action::await_change());
    };
    if job
        .spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_some_and(|m| m != MANAGED_BY)
    {
        return Ok(Action::await_change());
    }
    let job_uid = job.uid().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = st.ctx.pods().controlled_by(&ns, &job_uid);
    // Orphans the selector picks, for adoption below (a finished Job adopts nothing).
    let orphans: Vec<Arc<Pod>> = if super::is_finished(&job) {
        Vec::new()
    } else {
        st.ctx
            .pods()
            .orphans_in(&ns, |p| pod_control::selects(&job, p.labels()))
    };
    let pod_api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    if super::is_finished(&job) {
        // Pods left with our finalizer (e.g. after a restart) are let go (syncOrphanPod).
        st.forget(&key);
        for p in pods.iter().filter(|p| super::has_tracking_finalizer(p)) {
            pod_control::remove_finalizer(&pod_api, p).await?;
        }
        return Ok(Action::await_change());
    }
    if job.spec.is_none() {
        return Ok(Action::await_change());
    }
    let mut candidates = pods;
    candidates.extend(orphans);
    let pods = pod_control::claim(&pod_api, &job, candidates).await;
    let spec = job.spec.clone().unwrap_or_default();
    // The sync reads this copy; `job` takes the stored versions of its status writes.
    let snapshot = job.clone();
    let orig = job.status.clone().unwrap_or_default();
    let mut status = orig.clone();
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(Default::default);
    let (satisfied, expected_rm) = st.expectations.observe(&key, &pods);
    let now = Timestamp::now();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut c = Ctx {
        job: &snapshot,
        spec: &spec,
        key: key.clone(),
        indexed,
        completions: spec.completions.unwrap_or(0),
        expected_rm,
        uncounted_succeeded: uncounted.succeeded.iter().flatten().cloned().collect(),
        uncounted_failed: uncounted.failed.iter().flatten().cloned().collect(),
        succeeded: 0,
        active: 0,
        ready: 0,
        terminating: 0,
        prev_succeeded_ix: BTreeSet::new(),
        succeeded_ix: BTreeSet::new(),
        failed_ix: None,
        finished: None,
        record: Record::default(),
        requeue: None,
        pods,
    };
    let suspended = spec.suspend == Some(true);
    let active_pods: Vec<Arc<Pod>> = c
        .pods
        .iter()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    c.active = active_pods.len() as i32;
    c.ready = active_pods.iter().filter(|p| is_ready(p)).count() as i32;
    c.terminating = c
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p))
        .count() as i32;
    let new_succeeded: Vec<&Pod> = c
        .pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            c.tracked(p)
                && !c.uncounted_succeeded.contains(uid(p))
                && c.valid_index(p)
                && phase(p) == "Succeeded"
        })
        .collect();
    let new_failed: Vec<&Pod> = c
        .pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            c.tracked(p)
                && !c.uncounted_failed.contains(uid(p))
                && c.valid_index(p)
                && failure_policy::is_failed(p, &snapshot)
        })
        .collect();
    let counted_new_failed = new_failed.iter().filter(|p| c.policy_counts(p)).count() as i32;
    c.succeeded = status.succeeded.unwrap_or(0)
        + new_succeeded.len() as i32
        + c.uncounted_succeeded.len() as i32;
    let failed = status.failed.unwrap_or(0) + counted_new_failed + c.uncounted_failed.len() as i32;
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }
    c.record = st
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
        .unwrap_or_default()
        .with(&new_succeeded, &new_failed);

    // Has the Job finished (or is it bound to)?
    if let Some(scm) = cond_true(&status, "SuccessCriteriaMet") {
        c.finished = Some(Finish::new(
            "SuccessCriteriaMet",
            scm.reason.as_deref().unwrap_or(""),
            scm.message.as_deref().unwrap_or(""),
        ));
    } else if let Some(ft) = cond_true(&status, "FailureTarget") {
        c.finished = Some(Finish::new(
            "Failed",
            ft.reason.as_deref().unwrap_or(""),
            ft.message.as_deref().unwrap_or(""),
        ));
    } else if let Some(m) =
        failure_policy::fail_job_message(&snapshot, c.pods.iter().map(|p| p.as_ref()))
    {
        c.finished = Some(Finish::new("FailureTarget", "PodFailurePolicy", &m));
    }
    if c.finished.is_none() {
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.filter(|_| !suspended);
        let elapsed = status
            .start_time
            .as_ref()
            .map(|t| now.duration_since(t.0).as_secs_f64())
            .unwrap_or(0.0);
        if failed > backoff_limit || past_backoff_limit_on_failure(&spec, &c.pods) {
            c.finished = Some(Finish::new(
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if deadline.is_some_and(|d| elapsed >= d as f64) {
            c.finished = Some(Finish::new(
                "FailureTarget",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        } else if let Some(d) = deadline {
            c.wait_for(Duration::from_secs_f64((d as f64 - elapsed).max(0.0)));
        }
    }
    if indexed {
        c.prev_succeeded_ix = indexes::parse(
            status.completed_indexes.as_deref().unwrap_or(""),
            c.completions,
        );
        let mut all = c.prev_succeeded_ix.clone();
        for p in c
            .pods
            .iter()
            .filter(|p| phase(p) == "Succeeded" && c.tracked(p))
        {
            if let Some(ix) = c.index(p) {
                all.insert(ix);
            }
        }
        c.succeeded_ix = all;
        c.succeeded = c.succeeded_ix.len() as i32;
        if let Some(limit) = spec.backoff_limit_per_index {
            let failed_ix = failed_indexes(&c, &status, limit);
            if c.finished.is_none() {
                let total = failed_ix.len() as i32;
                if spec.max_failed_indexes.is_some_and(|m| total > m) {
                    c.finished = Some(Finish::new(
                        "FailureTarget",
                        "MaxFailedIndexesExceeded",
                        "Job has exceeded the specified maximal number of failed indexes",
                    ));
                } else if total > 0 && total + c.succeeded >= c.completions {
                    c.finished = Some(Finish::new(
                        "FailureTarget",
                        "FailedIndexes",
                        "Job has failed indexes",
                    ));
                }
            }
            c.failed_ix = Some(failed_ix);
        }
        if c.finished.is_none() {
            if let Some(msg) = success_policy_met(&spec, c.completions, &c.succeeded_ix) {
                c.finished = Some(Finish::new("SuccessCriteriaMet", "SuccessPolicy", &msg));
            }
        }
    }

    let mut manage_err: Option<Error> = None;
    if c.finished.is_some() {
        // Finishing: every active pod goes (keeping its finalizer, so it is counted).
        let (deleted_ready, deleted, err) =
            delete_pods(st, &pod_api, &key, &active_pods, false).await;
        if deleted != c.active || !satisfied {
            // Not finished until every pod is seen gone (or counted).
            c.finished = None;
        }
        c.active -= deleted;
        c.terminating += deleted;
        c.ready -= deleted_ready;
        manage_err = err;
    } else {
        let mut managed = false;
        if satisfied && job.metadata.deletion_timestamp.is_none() {
            manage_err = manage(st, &pod_api, &mut c, &active_pods, now).await;
            managed = true;
        }
        let complete = match spec.completions {
            None => c.succeeded > 0 && c.active == 0,
            Some(n) => c.succeeded >= n && c.active == 0,
        };
        if complete {
            c.finished = Some(Finish::new(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if managed {
            let conds = status.conditions.get_or_insert_with(Vec::new);
            if suspended {
                if conditions::set(conds, "Suspended", "True", "JobSuspended", "Job suspended") {
                    st.recorder
                        .record(&job, EventType::Normal, "Suspended", "Job suspended")
                        .await;
                }
            } else if conditions::get(conds, "Suspended").is_some_and(|s| s.status == "True") {
                conditions::set(conds, "Suspended", "False", "JobResumed", "Job resumed");
                st.recorder
                    .record(&job, EventType::Normal, "Resumed", "Job resumed")
                    .await;
                // activeDeadlineSeconds counts from the resume, as upstream.
                status.start_time = Some(Time(now));
            }
            if conds.is_empty() {
                status.conditions = None;
            }
        }
    }
    status.active = Some(c.active);
    status.ready = Some(c.ready);
    status.terminating = Some(c.terminating);
    track_and_write(st, &api, &pod_api, &mut job, &mut c, status, &orig).await?;
    if let Some(e) = manage_err {
        return Err(e);
    }
    Ok(match c.requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(10)),
        None => Action::await_change(),
    })
}

/// Restarts of OnFailure pods count against the back-off limit (pastBackoffLimitOnFailure).
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[Arc<Pod>]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Failures of an index so far, (counted, ignored by the pod failure policy), as the pod
/// replacing its newest failed pod carries them (upstream's getNewIndexFailureCounts: that
/// pod's annotations plus its own failure), and when the newest counted failure ended.
fn index_failures(c: &Ctx, ix: i32) -> ((i32, i32), Option<Timestamp>) {
    let mut counts = (0, 0);
    let mut last = None;
    for p in c.pods.iter().filter(|p| c.index(p) == Some(ix)) {
        if !failure_policy::is_failed(p, c.job) {
            continue;
        }
        let (counted, ignored) = (indexes::failure_count(p), indexes::ignored_failure_count(p));
        let next = if c.policy_counts(p) {
            let at = super::backoff_record::finished_at(p);
            last = Some(last.map_or(at, |l: Timestamp| l.max(at)));
            (counted + 1, ignored)
        } else {
            (counted, ignored + 1)
        };
        // The newest failure carries the most of both.
        if next.0 + next.1 > counts.0 + counts.1 {
            counts = next;
        }
    }
    (counts, last)
}

/// Indexes that used up `backoffLimitPerIndex` (or hit a FailIndex rule).
fn failed_indexes(c: &Ctx, status: &JobStatus, limit: i32) -> BTreeSet<i32> {
    let mut out = indexes::parse(
        status.failed_indexes.as_deref().unwrap_or(""),
        c.completions,
    );
    for p in c
        .pods
        .iter()
        .filter(|p| failure_policy::is_failed(p, c.job))
    {
        let Some(ix) = c.index(p) else { continue };
        let outcome = c
            .spec
            .pod_failure_policy
            .as_ref()
            .map(|pol| failure_policy::evaluate(pol, p))
            .unwrap_or(Outcome::Count);
        if outcome == Outcome::FailIndex || (outcome.counts() && indexes::failure_count(p) >= limit)
        {
            out.insert(ix);
        }
    }
    out
}

/// The first `successPolicy` rule the succeeded indexes meet, as upstream words it.
fn success_policy_met(
    spec: &JobSpec,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    let rules = &spec.success_policy.as_ref()?.rules;
    for (i, rule) in rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(ix), count) => {
                let want = indexes::parse(ix, completions);
                let have = want.intersection(succeeded).count() as i32;
                match count {
                    Some(n) => have >= n,
                    None => have == want.len() as i32,
                }
            }
            (None, Some(n)) => succeeded.len() as i32 >= n,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// A pod to make: its completion index (Indexed Jobs) and the index's failures so far
/// (counted, ignored) when `backoffLimitPerIndex` is set.
type Slot = (Option<i32>, Option<(i32, i32)>);

/// Make or remove pods to match the spec (upstream's manageJob); adjusts `c.active`.
async fn manage(
    st: &JobLoop,
    pod_api: &Api<Pod>,
    c: &mut Ctx<'_>,
    active_pods: &[Arc<Pod>],
    now: Timestamp,
) -> Option<Error> {
    let spec = c.spec;
    if spec.suspend == Some(true) {
        let (r, n, err) = delete_pods(st, pod_api, &c.key, active_pods, true).await;
        c.active -= n;
        c.terminating += n;
        c.ready -= r;
        return err;
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let want = match spec.completions {
        None if c.succeeded > 0 => c.active,
        None => parallelism,
        Some(n) => (n - c.succeeded).clamp(0, parallelism),
    };
    let to_delete = pods_to_remove(c, active_pods, (c.active - want).max(0));
    if !to_delete.is_empty() {
        let (r, n, err) = delete_pods(st, pod_api, &c.key, &to_delete, true).await;
        c.active -= n;
        c.terminating += n;
        c.ready -= r;
        return err;
    }
    let terminating = if failure_policy::only_replace_failed(c.job) {
        c.terminating
    } else {
        0
    };
    let diff = (want - terminating - c.active).min(MAX_PER_SYNC);
    if diff <= 0 {
        return None;
    }
    let base = st.ctx.opts.job_pod_failure_backoff;
    let per_index = spec.backoff_limit_per_index.is_some();
    if !per_index && c.record.failures_after_last_success > 0 {
        // Told even when the wait has already passed (the failure was seen late, as under
        // load): each step of the back-off is reported once, before its replacement pod.
        tell_backoff(st, c).await;
        let wait = c.record.remaining(now, base, POD_FAILURE_BACKOFF_CAP);
        if !wait.is_zero() {
            c.wait_for(wait);
            return None;
        }
    }
    let mut slots: Vec<Slot> = Vec::new();
    if c.indexed {
        let mut busy: BTreeSet<i32> = c.succeeded_ix.clone();
        busy.extend(active_pods.iter().filter_map(|p| c.index(p)));
        if let Some(f) = &c.failed_ix {
            busy.extend(f.iter().copied());
        }
        if failure_policy::only_replace_failed(c.job) {
            busy.extend(
                c.pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p))
                    .filter_map(|p| c.index(p)),
            );
        }
        for ix in (0..c.completions).filter(|i| !busy.contains(i)) {
            if slots.len() as i32 >= diff {
                break;
            }
            if per_index {
                let (failures, last) = index_failures(c, ix);
                let delay = Record::delay(failures.0 as u32, base, POD_FAILURE_BACKOFF_CAP);
                let elapsed = last
                    .map(|l| Duration::try_from(now.duration_since(l)).unwrap_or_default())
                    .unwrap_or(delay);
                if elapsed < delay {
                    c.wait_for(delay - elapsed);
                    continue;
                }
                slots.push((Some(ix), Some(failures)));
            } else {
                slots.push((Some(ix), None));
            }
        }
    } else {
        slots = (0..diff).map(|_| (None, None)).collect();
    }
    // Slow start, as upstream: batches of 1, 2, 4 … stop at the first batch with an error.
    let ns = c.job.namespace().unwrap_or_default();
    let results = crate::slow_start::batches(&slots, |(ix, failures)| {
        let pod = pod_control::pod_for(c.job, *ix, *failures);
        let (client, ns) = (&st.ctx.client, &ns);
        async move { crate::pods::create(client, ns, &PostParams::default(), &pod).await }
    })
    .await;
    let mut created = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(p) => {
                created += 1;
                st.expectations.created(&c.key, &p.name_any());
                st.recorder
                    .record(
                        c.job,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    )
                    .await;
            }
            Err(e) => {
                st.recorder
                    .record(
                        c.job,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    )
                    .await;
                first_err.get_or_insert(e);
            }
        }
    }
    c.active += created;
    if let Some(e) = first_err {
        // Held until the error back-off's retry, or an admission change in its namespace.
        st.refused
            .hold(&c.key, c.job.metadata.generation, Duration::MAX);
        return Some(e.into());
    }
    None
}

/// One Event per back-off step: what failed, how often, when the next pod is due.
async fn tell_backoff(st: &JobLoop, c: &Ctx<'_>) {
    let failures = c.record.failures_after_last_success;
    {
        let mut told = st.told.lock().unwrap_or_else(|p| p.into_inner());
        if told.get(&c.key) == Some(&failures) {
            return;
        }
        told.insert(c.key.clone(), failures);
    }
    let delay = Record::delay(
        failures,
        st.ctx.opts.job_pod_failure_backoff,
        POD_FAILURE_BACKOFF_CAP,
    );
    // Due at the last failure plus the delay, whenever the failure was seen.
    let at = c
        .record
        .last_failure
        .unwrap_or_else(Timestamp::now)
        .checked_add(delay)
        .map(|t| {
            t.round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(t)
                .to_string()
        })
        .unwrap_or_default();
    let msg = format!(
        "{failures} pod failure(s) since the last success (backoffLimit {}): next pod after a {}s back-off, at {at}",
        c.spec.backoff_limit.unwrap_or(6),
        delay.as_secs_f64()
    );
    st.recorder
        .record(c.job, EventType::Warning, "BackoffPodCreation", &msg)
        .await;
}

/// Which active pods to remove first: for Indexed Jobs duplicates and out-of-range indexes,
/// then not-ready before ready, unscheduled before scheduled, newest first.
fn pods_to_remove(c: &Ctx, active: &[Arc<Pod>], at_least: i32) -> Vec<Arc<Pod>> {
    let mut out: Vec<Arc<Pod>> = Vec::new();
    let mut rest: Vec<Arc<Pod>> = Vec::new();
    if c.indexed {
        let mut seen = HashSet::new();
        let mut sorted: Vec<Arc<Pod>> = active.to_vec();
        sorted.sort_by_key(|p| std::cmp::Reverse(is_ready(p)));
        let failed = c.failed_ix.clone().unwrap_or_default();
        for p in sorted {
            match c.index(&p) {
                // An index that failed (backoffLimitPerIndex) runs no more pods.
                Some(ix) if failed.contains(&ix) => out.push(p),
                Some(ix) if seen.insert(ix) => rest.push(p),
                _ => out.push(p),
            }
        }
    } else {
        rest = active.to_vec();
    }
    let more = (at_least - out.len() as i32).max(0) as usize;
    rest.sort_by_key(|p| {
        (
            is_ready(p),
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    });
    out.extend(rest.into_iter().take(more));
    out.truncate(MAX_PER_SYNC as usize);
    out
}

/// Delete pods; `release` removes the tracking finalizer first (the pod is not counted).
/// Returns (ready ones deleted, deleted, first error).
async fn delete_pods(
    st: &JobLoop,
    pod_api: &Api<Pod>,
    key: &str,
    pods: &[Arc<Pod>],
    release: bool,
) -> (i32, i32, Option<Error>) {
    let results = join_all(pods.iter().map(|p| async move {
        if release && super::has_tracking_finalizer(p) {
            pod_control::remove_finalizer(pod_api, p).await?;
        }
        pod_control::delete(pod_api, p).await
    }))
    .await;
    let (mut ready, mut n, mut err) = (0, 0, None);
    for (p, r) in pods.iter().zip(results) {
        match r {
            Ok(()) => {
                n += 1;
                if is_ready(p) {
                    ready += 1;
                }
                st.expectations.deleted(key, uid(p));
                if release {
                    st.expectations.finalizer_removed(key, uid(p));
                }
            }
            Err(e) => {
                err.get_or_insert(Error::from(e));
            }
        }
    }
    (ready, n, err)
}

/// Count finished pods exactly once and write status (upstream's
/// trackJobStatusAndRemoveFinalizers + flushUncountedAndRemoveFinalizers + enactJobFinished).
async fn track_and_write(
    st: &JobLoop,
    api: &Api<Job>,
    pod_api: &Api<Pod>,
    job: &mut Job,
    c: &mut Ctx<'_>,
    mut status: JobStatus,
    orig: &JobStatus,
) -> Result<(), Error> {
    let mut pods: Vec<Arc<Pod>> = c.pods.clone();
    if c.indexed {
        pods.sort_by_key(|p| c.index(p).unwrap_or(i32::MAX));
    }
    let mut with_finalizer: HashSet<String> = pods
        .iter()
        .filter(|p| c.tracked(p))
        .map(|p| uid(p).to_string())
        .collect();
    clean_uncounted(&mut status, &with_finalizer);
    let mut to_release: Vec<Arc<Pod>> = Vec::new();
    let mut new_ix: Vec<i32> = Vec::new();
    let mut reached_max = false;
    let finishing_failed = c
        .finished
        .as_ref()
        .is_some_and(|f| f.type_ != "SuccessCriteriaMet");
    let delayed = per_index_delayed(c);
    {
        let unc = status
            .uncounted_terminated_pods
            .get_or_insert_with(Default::default);
        for p in &pods {
            if !c.tracked(p) {
                continue;
            }
            let considered_failed = failure_policy::is_failed(p, c.job);
            let can_release = job.metadata.deletion_timestamp.is_some()
                || c.finished.is_some()
                || phase(p) == "Succeeded"
                || (considered_failed && !delayed.contains(uid(p)));
            if !can_release {
                continue;
            }
            to_release.push(p.clone());
            let u = uid(p).to_string();
            if phase(p) == "Succeeded" && !c.uncounted_failed.contains(&u) {
                if c.indexed {
                    if let Some(ix) = c.index(p) {
                        if !c.prev_succeeded_ix.contains(&ix) {
                            new_ix.push(ix);
                        }
                    }
                } else if !c.uncounted_succeeded.contains(&u) {
                    unc.succeeded.get_or_insert_with(Vec::new).push(u);
                }
            } else if (considered_failed || finishing_failed)
                && !c.uncounted_failed.contains(&u)
                && c.valid_index(p)
                && c.policy_counts(p)
            {
                unc.failed.get_or_insert_with(Vec::new).push(u);
            }
            let n = new_ix.len()
                + unc.succeeded.as_ref().map_or(0, Vec::len)
                + unc.failed.as_ref().map_or(0, Vec::len);
            if n >= MAX_UNCOUNTED {
                reached_max = true;
                break;
            }
        }
    }
    if c.indexed {
        c.succeeded_ix = c.prev_succeeded_ix.clone();
        c.succeeded_ix.extend(new_ix);
        status.succeeded = Some(c.succeeded_ix.len() as i32);
        status.completed_indexes = Some(indexes::format(&c.succeeded_ix));
        status.failed_indexes = c.failed_ix.as_ref().map(indexes::format);
    }
    // The interim condition is written before any finalizer goes; the final one after.
    if let Some(f) = c.finished.clone() {
        let conds = status.conditions.get_or_insert_with(Vec::new);
        match f.type_ {
            "FailureTarget" => {
                conditions::set(conds, "FailureTarget", "True", &f.reason, &f.message);
                c.finished = Some(Finish::new("Failed", &f.reason, &f.message));
            }
            "SuccessCriteriaMet" => {
                conditions::set(conds, "SuccessCriteriaMet", "True", &f.reason, &f.message);
                c.finished = Some(Finish::new("Complete", &f.reason, &f.message));
            }
            _ => {}
        }
    }
    normalize(&mut status);
    if &status != orig {
        write_status(api, job, &status).await?;
    }
    // The counts are stored: the back-off record may now include these pods.
    st.records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(c.key.clone(), c.record.clone());
    let written = status.clone();
    let results = join_all(
        to_release
            .iter()
            .map(|p| pod_control::remove_finalizer(pod_api, p)),
    )
    .await;
    let mut rm_err = None;
    for (p, r) in to_release.iter().zip(results) {
        match r {
            Ok(()) => {
                with_finalizer.remove(uid(p));
                st.expectations.finalizer_removed(&c.key, uid(p));
            }
            Err(e) => {
                rm_err.get_or_insert(e);
            }
        }
    }
    clean_uncounted(&mut status, &with_finalizer);
    let mut finished_now = None;
    if !reached_max && rm_err.is_none() {
        if let Some(f) = c.finished.clone() {
            let unc = status.uncounted_terminated_pods.as_ref();
            let pending = unc.map_or(0, |u| {
                u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
            });
            if pending == 0 && c.terminating == 0 {
                let conds = status.conditions.get_or_insert_with(Vec::new);
                conditions::set(conds, f.type_, "True", &f.reason, &f.message);
                if f.type_ == "Complete" {
                    status.completion_time = conditions::get(conds, "Complete")
                        .and_then(|c| c.last_transition_time.clone());
                }
                finished_now = Some(f);
            }
        }
    }
    normalize(&mut status);
    if status != written {
        write_status(api, job, &status).await?;
    }
    if let Some(f) = finished_now {
        tracing::info!(job = %c.key, condition = f.type_, reason = %f.reason, "job finished");
        if f.type_ == "Complete" {
            if c.spec
                .completions
                .is_some_and(|n| status.succeeded.unwrap_or(0) > n)
            {
                st.recorder
                    .record(
                        job,
                        EventType::Warning,
                        "TooManySucceededPods",
                        "Too many succeeded pods running after completion count reached",
                    )
                    .await;
            }
            st.recorder
                .record(job, EventType::Normal, "Completed", "Job completed")
                .await;
        } else {
            st.recorder
                .record(job, EventType::Warning, &f.reason, &f.message)
                .await;
        }
    }
    match rm_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// With `backoffLimitPerIndex`, the newest failed pod of an index keeps its finalizer until
/// its replacement exists (so its failure count passes on), unless the index is done.
fn per_index_delayed(c: &Ctx) -> HashSet<String> {
    let mut out = HashSet::new();
    if c.spec.backoff_limit_per_index.is_none() {
        return out;
    }
    let failed_ix = c.failed_ix.clone().unwrap_or_default();
    for ix in 0..c.completions {
        if c.succeeded_ix.contains(&ix) || failed_ix.contains(&ix) {
            continue;
        }
        let of_ix: Vec<&Arc<Pod>> = c.pods.iter().filter(|p| c.index(p) == Some(ix)).collect();
        let replaced = of_ix
            .iter()
            .any(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none());
        if replaced {
            continue;
        }
        if let Some(newest) = of_ix
            .iter()
            .filter(|p| failure_policy::is_failed(p, c.job))
            .max_by_key(|p| indexes::failure_count(p))
        {
            out.insert(uid(newest).to_string());
        }
    }
    out
}

/// Uids whose finalizer is gone move from `uncountedTerminatedPods` into the counters.
fn clean_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) {
    let unc = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let moved = |list: &mut Option<Vec<String>>| -> i32 {
        let Some(l) = list.as_mut() else { return 0 };
        let before = l.len();
        l.retain(|u| with_finalizer.contains(u));
        (before - l.len()) as i32
    };
    let s = moved(&mut unc.succeeded);
    let f = moved(&mut unc.failed);
    if s > 0 {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + s);
    }
    if f > 0 {
        status.failed = Some(status.failed.unwrap_or(0) + f);
    }
}

/// Empty lists as upstream stores them (omitted), so an unchanged status compares equal.
fn normalize(status: &mut JobStatus) {
    if let Some(u) = status.uncounted_terminated_pods.as_mut() {
        if u.succeeded.as_ref().is_some_and(Vec::is_empty) {
            u.succeeded = None;
        }
        if u.failed.as_ref().is_some_and(Vec::is_empty) {
            u.failed = None;
        }
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
}

async fn write_status(api: &Api<Job>, job: &mut Job, status: &JobStatus) -> Result<(), Error> {
    job.status = Some(status.clone());
    let stored = api
        .replace_status(&job.name_any(), &PostParams::default(), job)
        .await?;
    *job = stored;
    Ok(())
}
