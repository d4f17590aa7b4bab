//! The ServiceAccount controller (upstream's serviceaccounts-controller): every active
//! namespace has a `default` ServiceAccount, re-created if deleted.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::context::Context;

/// The account every namespace gets.
pub const DEFAULT: &str = "default";

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    // Watched (and read) with the controller-manager's client, as upstream's shared informers:
    // the loop's own role only creates accounts.
    let accounts: Api<ServiceAccount> = Api::all(ctx.informer_client());
    capstan_slim::controller(
        Api::<Namespace>::all(ctx.informer_client()),
        watcher::Config::default(),
    )
    .watches_stream(
        capstan_slim::touched(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
        ),
        |sa: ServiceAccount| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    )
    .run(reconcile, error_policy, lp)
    .await;
}

fn error_policy(ns: Arc<Namespace>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&ns.name_any());
    tracing::warn!(namespace = %ns.name_any(), attempts, error = %err, "could not create the default service account; retrying");
    Action::requeue(delay)
}

async fn reconcile(ns: Arc<Namespace>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(lp.ctx.client.clone(), &name);
    let read: Api<ServiceAccount> = Api::namespaced(lp.ctx.informer_client(), &name);
    if read.get_opt(DEFAULT).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::debug!(namespace = %name, "default service account created"),
            // Someone was quicker, or the namespace began terminating meanwhile.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    lp.backoff.reset(&name);
    Ok(Action::await_change())
}
