//! One sync of one CronJob (upstream's syncCronJob + cleanupFinishedJobs): reconcile the
//! active list with the Jobs that exist, start the Job of the latest due time if policy
//! allows, prune finished Jobs beyond the history limits, write status, and say when the
//! next scheduled time is due.

use std::collections::HashSet;
use std::sync::Arc;

use capstan_slim::Action;
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::ResourceExt;

use super::schedule::{self, Missed, Schedule};
use super::{CronJobLoop, Error};
use crate::events::EventType;
use crate::job::finished_condition;
use crate::owners;

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Upstream's nextScheduleDelta: wake a little after the due time, never just before it.
const NEXT_DELTA_MS: i64 = 100;

fn to_chrono(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`: the same time always makes the
/// same name, so a Job is never started twice for one time.
pub fn job_name(cj_name: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cj_name}-{}", scheduled.timestamp().div_euclid(60))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job for `scheduled` (upstream's getJobFromTemplate2).
fn job_for(cj: &CronJob, sched: &Schedule, scheduled: DateTime<Utc>) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let tmeta = spec.job_template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), sched.rfc3339(scheduled));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(cj)]),
            ..Default::default()
        },
        spec: spec.job_template.spec,
        status: None,
    }
}

fn earliest(cj: &CronJob, status: &CronJobStatus) -> DateTime<Utc> {
    status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(to_chrono)
        .unwrap_or_default()
}

/// How long (on the controller's clock) until the next scheduled time.
fn until_next(
    cj: &CronJob,
    status: &CronJobStatus,
    sched: &Schedule,
    now: DateTime<Utc>,
) -> Option<chrono::Duration> {
    let (earliest, recent, _) =
        schedule::most_recent(sched, earliest(cj, status), now, None).ok()?;
    let next = sched.next(recent.unwrap_or(earliest))?;
    Some(next - now + chrono::Duration::milliseconds(NEXT_DELTA_MS))
}

fn in_active(status: &CronJobStatus, uid: &str) -> bool {
    status
        .active
        .iter()
        .flatten()
        .any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_active(status: &mut CronJobStatus, uid: &str) {
    if let Some(a) = status.active.as_mut() {
        a.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

pub async fn sync(st: &CronJobLoop, cached: &CronJob) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let key = crate::pods::key(&cached.metadata);
    let api: Api<CronJob> = Api::namespaced(st.ctx.client.clone(), &ns);
    let job_api: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    // Our own status writes may not be in the cache yet; a stale lastScheduleTime would
    // start a time twice (the deterministic name would refuse it, but read fresh anyway).
    let Some(mut cj) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let uid = cj.uid().unwrap_or_default();
    let jobs: Vec<Arc<Job>> = st
        .ctx
        .jobs()
        .store
        .state()
        .into_iter()
        .filter(|j| {
            j.metadata.namespace.as_deref() == Some(ns.as_str())
                && owners::is_controlled_by(&j.metadata, &uid)
        })
        .collect();
    let orig = cj.status.clone().unwrap_or_default();
    let mut status = orig.clone();
    let now = st.clock.now();

    // The active list follows the Jobs that exist.
    let mut children = HashSet::new();
    for j in &jobs {
        let juid = j.uid().unwrap_or_default();
        children.insert(juid.clone());
        let found = in_active(&status, &juid);
        let finished = finished_condition(j);
        match (found, finished) {
            (false, None) => {
                st.recorder
                    .record(
                        &cj,
                        EventType::Warning,
                        "UnexpectedJob",
                        &format!(
                            "Saw a job that the controller did not create or forgot: {}",
                            j.name_any()
                        ),
                    )
                    .await;
            }
            (true, Some(f)) => {
                remove_active(&mut status, &juid);
                st.recorder
                    .record(
                        &cj,
                        EventType::Normal,
                        "SawCompletedJob",
                        &format!(
                            "Saw completed job: {}, condition: {}",
                            j.name_any(),
                            f.type_
                        ),
                    )
                    .await;
            }
            _ => {}
        }
        if let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.as_ref()) {
            if status
                .last_successful_time
                .as_ref()
                .is_none_or(|t| t.0 < done.0)
            {
                status.last_successful_time = Some(done.clone());
            }
        }
    }
    let listed: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
    for r in listed {
        let ruid = r.uid.clone().unwrap_or_default();
        if children.contains(&ruid) {
            continue;
        }
        // Not in the cache: ask the API before calling it gone.
        let jname = r.name.clone().unwrap_or_default();
        let gone = match job_api.get_opt(&jname).await? {
            None => true,
            Some(j) => j.uid().as_deref() != Some(ruid.as_str()),
        };
        if gone {
            st.recorder
                .record(
                    &cj,
                    EventType::Normal,
                    "MissingJob",
                    &format!("Active job went missing: {jname}"),
                )
                .await;
            remove_active(&mut status, &ruid);
        }
    }

    let mut next: Option<chrono::Duration> = None;
    let mut result: Result<(), Error> = Ok(());
    if cj.metadata.deletion_timestamp.is_none() {
        match start_if_due(st, &cj, &job_api, &mut status, now).await {
            Ok(n) => next = n,
            Err(e) => result = Err(e),
        }
        cleanup(st, &cj, &job_api, &mut status, &jobs).await;
    }
    if status.active.as_ref().is_some_and(Vec::is_empty) {
        status.active = None;
    }
    if status != orig {
        cj.status = Some(status);
        api.replace_status(&name, &PostParams::default(), &cj)
            .await?;
    }
    result?;
    tracing::debug!(cronjob = %key, next = ?next, "synced");
    Ok(match next {
        Some(d) => Action::requeue(st.clock.real(d)),
        None => Action::await_change(),
    })
}

/// Start the Job of the latest due time when policy allows; returns how long until the
/// next scheduled time (None: nothing to wait for until the spec changes).
async fn start_if_due(
    st: &CronJobLoop,
    cj: &CronJob,
    job_api: &Api<Job>,
    status: &mut CronJobStatus,
    now: DateTime<Utc>,
) -> Result<Option<chrono::Duration>, Error> {
    let spec = cj.spec.clone().unwrap_or_default();
    if let Err(e) = schedule::zone(spec.time_zone.as_deref()) {
        let tz = spec.time_zone.clone().unwrap_or_default();
        let msg = format!("invalid timeZone: {tz:?}: {e}");
        st.recorder
            .record(cj, EventType::Warning, "UnknownTimeZone", &msg)
            .await;
        return Ok(None);
    }
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let sched = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
            st.recorder
                .record(cj, EventType::Warning, "UnparseableSchedule", &msg)
                .await;
            return Ok(None);
        }
    };
    let deadline = spec.starting_deadline_seconds;
    let (_, due, missed) = match schedule::most_recent(&sched, earliest(cj, status), now, deadline)
    {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("invalid schedule: {} : {e}", spec.schedule);
            st.recorder
                .record(cj, EventType::Warning, "InvalidSchedule", &msg)
                .await;
            return Ok(None);
        }
    };
    let Some(due) = due else {
        return Ok(until_next(cj, status, &sched, now));
    };
    if missed == Missed::Many {
        st.recorder
            .record(
                cj,
                EventType::Warning,
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
            )
            .await;
    }
    if deadline.is_some_and(|d| due + chrono::Duration::seconds(d) < now) {
        let msg = format!(
            "Missed scheduled time to start a job: {}",
            due.format("%a, %d %b %Y %H:%M:%S %z")
        );
        st.recorder
            .record(cj, EventType::Warning, "MissSchedule", &msg)
            .await;
        return Ok(until_next(cj, status, &sched, now));
    }
    let name = job_name(&cj.name_any(), due);
    let already = status
        .active
        .iter()
        .flatten()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| to_chrono(t) == due);
    if already {
        return Ok(until_next(cj, status, &sched, now));
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    let active = status.active.clone().unwrap_or_default();
    if policy == "Forbid" && !active.is_empty() {
        st.recorder
            .record(
                cj,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            .await;
        return Ok(until_next(cj, status, &sched, now));
    }
    if policy == "Replace" {
        for r in &active {
            let jname = r.name.clone().unwrap_or_default();
            if let Some(j) = job_api.get_opt(&jname).await? {
                if !delete_job(st, cj, job_api, &j).await {
                    return Err(Error::Replace(format!(
                        "{}/{jname}",
                        cj.namespace().unwrap_or_default()
                    )));
                }
                remove_active(status, &j.uid().unwrap_or_default());
            }
        }
    }
    let wanted = job_for(cj, &sched, due);
    let created = match job_api.create(&PostParams::default(), &wanted).await {
        Ok(j) => {
            st.recorder
                .record(
                    cj,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created job {}", j.name_any()),
                )
                .await;
            j
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Made by an earlier sync whose status write was lost: take it in if ours.
            let Some(j) = job_api.get_opt(&name).await? else {
                return Ok(until_next(cj, status, &sched, now));
            };
            if !owners::is_controlled_by(&j.metadata, &cj.uid().unwrap_or_default())
                || in_active(status, &j.uid().unwrap_or_default())
            {
                return Ok(until_next(cj, status, &sched, now));
            }
            j
        }
        Err(e) => {
            st.recorder
                .record(
                    cj,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating job: {e}"),
                )
                .await;
            return Err(e.into());
        }
    };
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(reference(&created));
    status.last_schedule_time = Some(to_time(due));
    Ok(until_next(cj, status, &sched, now))
}

/// Delete a Job with its pods (Background); an Event either way. Returns success.
async fn delete_job(st: &CronJobLoop, cj: &CronJob, job_api: &Api<Job>, job: &Job) -> bool {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match job_api.delete(&job.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            st.recorder
                .record(
                    cj,
                    EventType::Warning,
                    "FailedDelete",
                    &format!("Deleted job: {e}"),
                )
                .await;
            return false;
        }
    }
    st.recorder
        .record(
            cj,
            EventType::Normal,
            "SuccessfulDelete",
            &format!("Deleted job {}", job.name_any()),
        )
        .await;
    true
}

/// Finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` go, oldest
/// start first.
async fn cleanup(
    st: &CronJobLoop,
    cj: &CronJob,
    job_api: &Api<Job>,
    status: &mut CronJobStatus,
    jobs: &[Arc<Job>],
) {
    let spec = cj.spec.clone().unwrap_or_default();
    for (type_, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished_condition(j).is_some_and(|c| c.type_ == type_))
            .collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        if extra == 0 {
            continue;
        }
        // Oldest start first; Jobs that never started last (upstream's byJobStartTime).
        done.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_none(), start, j.name_any())
        });
        for j in done.into_iter().take(extra) {
            if delete_job(st, cj, job_api, j).await {
                remove_active(status, &j.uid().unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_minutes_since_the_epoch() {
        let t: DateTime<Utc> = "2026-01-01T00:05:00Z".parse().unwrap();
        assert_eq!(
            job_name("hello", t),
            format!("hello-{}", t.timestamp() / 60)
        );
        assert_eq!(job_name("hello", t), "hello-29453765");
    }
}
