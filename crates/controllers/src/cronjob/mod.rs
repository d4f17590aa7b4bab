//! The CronJob controller (upstream pkg/controller/cronjob, v2): makes the Job of each
//! scheduled time (named `<cronjob>-<minutes since epoch>`), honours concurrencyPolicy,
//! startingDeadlineSeconds, suspend and the history limits, keeps `status` true, and sleeps
//! until exactly the next scheduled time.

pub mod clock;
pub mod schedule;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::batch::v1::CronJob;
use kube::runtime::watcher;
use kube::Api;

use crate::backoff::Backoff;
use crate::context::Context;
use crate::events::Recorder;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("could not replace job {0}")]
    Replace(String),
}

pub struct CronJobLoop {
    ctx: Arc<Context>,
    recorder: Recorder,
    clock: clock::Clock,
    errors: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let jobs = ctx.jobs();
    let job_changes = jobs.subscribe();
    jobs.ready().await;
    let st = Arc::new(CronJobLoop {
        recorder: ctx.recorder("cronjob-controller"),
        clock: clock::Clock::new(
            ctx.opts.cronjob_clock_offset_seconds,
            ctx.opts.cronjob_clock_speed,
        ),
        ctx: ctx.clone(),
        errors: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    });
    let api: Api<CronJob> = Api::all(ctx.client.clone());
    capstan_slim::controller(api, watcher::Config::default())
        .owns_shared_stream(job_changes)
        .run(reconcile, error_policy, st)
        .await;
}

async fn reconcile(cj: Arc<CronJob>, st: Arc<CronJobLoop>) -> Result<Action, Error> {
    let action = sync::sync(&st, &cj).await?;
    st.errors.reset(&crate::pods::key(&cj.metadata));
    Ok(action)
}

fn error_policy(cj: Arc<CronJob>, err: &Error, st: Arc<CronJobLoop>) -> Action {
    let key = crate::pods::key(&cj.metadata);
    if matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == 409) {
        return Action::requeue(Duration::from_millis(100));
    }
    let (attempts, delay) = st.errors.failed(&key);
    tracing::warn!(cronjob = %key, error = %err, attempts, retry_in = ?delay, "cronjob sync failed");
    Action::requeue(delay)
}
