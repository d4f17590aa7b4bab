//! The Deployment loop (upstream `deployment` controller): ReplicaSets per pod template
//! (`pod-template-hash`), RollingUpdate and Recreate, revisions and history cleanup,
//! proportional scaling, pause, and the Progressing/Available conditions.

mod progress;
mod rollout;
mod sync;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use capstan_scheduler::selectors::{labels_of, selector_matches};
use capstan_slim::Action;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;

use crate::backoff::Backoff;
use crate::context::Context;
use crate::events::Recorder;
use crate::pods;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} for deployment {key}: {source}")]
    Api {
        key: String,
        what: &'static str,
        source: kube::Error,
    },
    #[error("hash collision for deployment {key}: replica set {name} exists with another template; collisionCount is now {count}")]
    Collision {
        key: String,
        name: String,
        count: i32,
    },
}

/// The loop's state, shared by its reconciles.
pub struct Loop {
    client: kube::Client,
    ctx: Arc<Context>,
    rss: Store<ReplicaSet>,
    /// Set once `rss` has its first list (see `informers::Ready`).
    rss_ready: crate::informers::Ready,
    recorder: Recorder,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let shared = ctx.pods();
    shared.ready().await;
    // The loop's own ReplicaSet informer (ReplicaSets are few; pods are shared).
    let (rss, writer) = reflector::store();
    let rs_changes = reflector::reflector(
        writer,
        capstan_slim::watcher(
            Api::<ReplicaSet>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let state = Arc::new(Loop {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        rss_ready: crate::informers::Ready::of(&rss),
        rss,
        recorder: ctx.recorder("deployment-controller"),
        backoff: Backoff::new(ctx.opts.replica_backoff_base, ctx.opts.replica_backoff_max),
    });
    let controller = capstan_slim::controller(
        Api::<Deployment>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    controller
        // An orphan ReplicaSet wakes every Deployment whose selector picks it, so it is
        // adopted at once rather than at the Deployment's next change.
        .watches_stream(rs_changes, move |rs: ReplicaSet| {
            crate::owners::concerned(&rs.metadata, &deployments, |d: &Deployment| {
                d.spec
                    .as_ref()
                    .is_some_and(|s| selector_matches(&s.selector, labels_of(&rs.metadata)))
            })
        })
        .run(reconcile, error_policy, state)
        .await;
}

fn error_policy(d: Arc<Deployment>, err: &Error, state: Arc<Loop>) -> Action {
    let key = pods::key(d.meta());
    // A conflict means this sync read a stale ReplicaSet: the newer one is on its way.
    if let Error::Api {
        source: kube::Error::Api(s),
        ..
    } = err
    {
        if s.code == 409 {
            tracing::debug!(%key, "stale replica set; syncing again");
            return Action::requeue(Duration::from_millis(200));
        }
    }
    let (attempts, delay) = state.backoff.failed(&key);
    tracing::warn!(%key, attempts, error = %err, "deployment sync failed; retrying");
    Action::requeue(delay)
}

async fn reconcile(d: Arc<Deployment>, state: Arc<Loop>) -> Result<Action, Error> {
    state.rss_ready.wait().await;
    let key = pods::key(d.meta());
    let mut s = sync::Sync::load(&d, &state).await?;
    let requeue = if d.metadata.deletion_timestamp.is_some() {
        s.sync_status_only().await?
    } else {
        s.check_paused_conditions();
        if util::paused(&d) || s.is_scaling_event() {
            s.sync_scale().await?
        } else if util::is_recreate(&d) {
            s.rollout_recreate().await?
        } else {
            s.rollout_rolling().await?
        }
    };
    state.backoff.reset(&key);
    Ok(match requeue {
        Some(after) => Action::requeue(after.max(Duration::from_millis(100))),
        None => Action::await_change(),
    })
}
