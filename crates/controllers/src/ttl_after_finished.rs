//! The TTL-after-finished controller (upstream pkg/controller/ttlafterfinished): deletes a
//! finished Job `ttlSecondsAfterFinished` after it finished, with propagation Background.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use capstan_slim::Controller;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::context::Context;
use crate::job::finished_condition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct State {
    ctx: Arc<Context>,
    errors: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let jobs = ctx.jobs();
    let changes = jobs.subscribe();
    jobs.ready().await;
    let st = Arc::new(State {
        ctx: ctx.clone(),
        errors: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    });
    Controller::for_shared_stream(changes, jobs.store.clone())
        .reconcile_all_on(futures::stream::once(async {}))
        .run(reconcile, error_policy, st)
        .await;
}

/// How long until `job` expires (None: it has no TTL or has not finished).
fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finished_condition(job)?.last_transition_time.as_ref()?.0;
    let expires = finished.as_second() + i64::from(ttl);
    let left_ms = expires * 1000 - now.as_millisecond();
    Some(Duration::from_millis(left_ms.max(0) as u64))
}

async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, Error> {
    let Some(left) = time_left(&job, Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    // The cache may be old: check the stored Job still expired (its TTL may have changed).
    let Some(fresh) = api.get_opt(&job.name_any()).await? else {
        return Ok(Action::await_change());
    };
    match time_left(&fresh, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(l) if !l.is_zero() => return Ok(Action::requeue(l)),
        Some(_) => {}
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            resource_version: fresh.resource_version(),
            uid: fresh.uid(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&fresh.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(job = %crate::pods::key(&fresh.metadata), "finished job's TTL expired: deleted");
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    st.errors.reset(&crate::pods::key(&job.metadata));
    Ok(Action::await_change())
}

fn error_policy(job: Arc<Job>, err: &Error, st: Arc<State>) -> Action {
    let key = crate::pods::key(&job.metadata);
    let (attempts, delay) = st.errors.failed(&key);
    tracing::warn!(job = %key, error = %err, attempts, "ttl-after-finished: delete failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expires_ttl_after_the_finish() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 10, "template": {}},
            "status": {"conditions": [{"type": "Complete", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            time_left(&job, at("2026-01-01T00:00:04Z")),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            time_left(&job, at("2026-01-01T00:00:11Z")),
            Some(Duration::ZERO)
        );
        let mut running = job.clone();
        running.status = None;
        assert_eq!(time_left(&running, at("2026-01-01T00:00:11Z")), None);
    }
}
