//! The namespace controller (upstream's pkg/controller/namespace): a Terminating namespace is
//! emptied of every namespaced resource discovery names, then its `kubernetes` finalizer goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::conditions;
use crate::context::Context;

/// The finalizer the namespace controller owns (`spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("discovery failed: {0}")]
    Discovery(kube::Error),
    #[error("{0}")]
    Content(String),
}

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
    });
    // A pod finishing its graceful deletion may be the last thing a namespace waits for.
    let pods = ctx.pods().subscribe();
    capstan_slim::controller(api, watcher::Config::default())
        .watches_shared_stream(pods, |pod: Arc<Pod>| {
            pod.metadata
                .deletion_timestamp
                .as_ref()
                .and(pod.metadata.namespace.clone())
                .map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .run(reconcile, error_policy, lp)
        .await;
}

/// How soon a namespace whose content is still going is swept again.
const CONTENT_RECHECK: Duration = Duration::from_secs(1);

fn error_policy(ns: Arc<Namespace>, err: &Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&ns.name_any());
    tracing::warn!(namespace = %ns.name_any(), attempts, error = %err, "namespace deletion failed; retrying");
    Action::requeue(delay)
}

/// What one sweep of a namespace's content found.
#[derive(Default)]
struct Sweep {
    /// Resource (`pods`, `deployments.apps`) → instances still there.
    remaining: BTreeMap<String, usize>,
    /// Finalizer → instances still carrying it.
    finalizers: BTreeMap<String, usize>,
    errors: Vec<String>,
}

async fn reconcile(ns: Arc<Namespace>, lp: Arc<Loop>) -> Result<Action, Error> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_none() {
        lp.backoff.reset(&name);
        return Ok(Action::await_change());
    }
    let has_ours = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if !has_ours {
        return Ok(Action::await_change());
    }
    let client = lp.ctx.client.clone();
    let mut conds: Vec<NamespaceCondition> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(e) => {
            conditions::set(
                &mut conds,
                "NamespaceDeletionDiscoveryFailure",
                "True",
                "DiscoveryFailed",
                &format!("Discovery failed for some groups: {e}"),
            );
            write_conditions(&lp, &ns, conds).await?;
            return Err(Error::Discovery(e));
        }
    };
    conditions::set(
        &mut conds,
        "NamespaceDeletionDiscoveryFailure",
        "False",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    );
    conditions::set(
        &mut conds,
        "NamespaceDeletionGroupVersionParsingFailure",
        "False",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    );
    let mut sweep = Sweep::default();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &ar);
            let resource = if ar.group.is_empty() {
                ar.plural.clone()
            } else {
                format!("{}.{}", ar.plural, ar.group)
            };
            if let Err(e) = empty(&api, caps.supports_operation(verbs::DELETE_COLLECTION)).await {
                sweep.errors.push(format!("{resource}: {e}"));
                continue;
            }
            if let Err(e) = count_remaining(&api, &resource, &mut sweep).await {
                sweep.errors.push(format!("{resource}: {e}"));
            }
        }
    }
    record_sweep(&mut conds, &sweep);
    write_conditions(&lp, &ns, conds).await?;
    if !sweep.errors.is_empty() {
        return Err(Error::Content(sweep.errors.join(", ")));
    }
    if !sweep.remaining.is_empty() {
        // Content is going (graceful pod deletion, finalizers): look again in a second, as
        // upstream does for content held by finalizers (its estimate 0 gives 0/2 + 1 s);
        // pods being deleted also wake the loop. A growing delay here (it was a back-off to
        // 30 s) left a namespace up to 30 s behind its last finalizer's removal.
        tracing::debug!(namespace = %name, "namespace content remaining");
        return Ok(Action::requeue(CONTENT_RECHECK));
    }
    finalize(&lp, &ns).await?;
    lp.backoff.reset(&name);
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// Objects read per request while a namespace is emptied: a namespace of 30,000 pods read
/// whole (as `DynamicObject`s) held gigabytes in this loop.
const PAGE: u32 = 500;

/// Delete everything of one resource in the namespace.
async fn empty(api: &Api<DynamicObject>, collection: bool) -> Result<(), kube::Error> {
    if collection {
        // The answer lists every object deleted; nothing here reads it, so it is drained
        // as it arrives instead of parsed (kube's `delete_collection` parses it twice).
        let req = kube::core::Request::new(api.resource_url())
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .map_err(kube::Error::BuildRequest)?;
        let body = api.clone().into_client().request_stream(req).await?;
        futures::io::copy(body, &mut futures::io::sink())
            .await
            .map_err(kube::Error::ReadEvents)?;
        return Ok(());
    }
    let mut page = ListParams::default().limit(PAGE);
    loop {
        let list = api.list_metadata(&page).await?;
        for obj in &list.items {
            match api.delete(&obj.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Count what of one resource is still in the namespace, and the finalizers holding it, by
/// metadata a page at a time (upstream's deleter lists through its metadata client).
async fn count_remaining(
    api: &Api<DynamicObject>,
    resource: &str,
    sweep: &mut Sweep,
) -> Result<(), kube::Error> {
    let mut page = ListParams::default().limit(PAGE);
    loop {
        let list = api.list_metadata(&page).await?;
        if !list.items.is_empty() {
            *sweep.remaining.entry(resource.to_string()).or_default() += list.items.len();
        }
        for obj in &list.items {
            for f in obj.finalizers() {
                *sweep.finalizers.entry(f.clone()).or_default() += 1;
            }
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Upstream's content conditions, worded as its namespace deleter words them.
fn record_sweep(conds: &mut Vec<NamespaceCondition>, sweep: &Sweep) {
    if sweep.errors.is_empty() {
        conditions::set(
            conds,
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        );
    } else {
        conditions::set(
            conds,
            "NamespaceDeletionContentFailure",
            "True",
            "ContentDeletionFailed",
            &format!(
                "Failed to delete all resource types, {} remaining: {}",
                sweep.errors.len(),
                sweep.errors.join(", ")
            ),
        );
    }
    if sweep.remaining.is_empty() {
        conditions::set(
            conds,
            "NamespaceContentRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed",
        );
    } else {
        let parts: Vec<String> = sweep
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        conditions::set(
            conds,
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            &format!("Some resources are remaining: {}", parts.join(", ")),
        );
    }
    if sweep.finalizers.is_empty() {
        conditions::set(
            conds,
            "NamespaceFinalizersRemaining",
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        );
    } else {
        let parts: Vec<String> = sweep
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        conditions::set(
            conds,
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizersRemain",
            &format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        );
    }
}

/// Write the conditions through `/status` when they differ from what is stored.
async fn write_conditions(
    lp: &Loop,
    ns: &Namespace,
    conds: Vec<NamespaceCondition>,
) -> Result<(), Error> {
    let stored = ns.status.as_ref().and_then(|s| s.conditions.as_ref());
    if stored == Some(&conds) {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(lp.ctx.client.clone());
    let status = NamespaceStatus {
        phase: Some("Terminating".into()),
        conditions: Some(conds),
    };
    // An update of `/status` (upstream's role allows `update`, not `patch`), on the copy the
    // sweep decided from: a conflict is retried with a fresh one.
    let mut next = ns.clone();
    next.status = Some(status);
    next.metadata.managed_fields = None;
    match api
        .replace_status(&ns.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /api/v1/namespaces/x/finalize` without our finalizer; the API server removes the
/// namespace when no finalizer is left.
async fn finalize(lp: &Loop, ns: &Namespace) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(lp.ctx.client.clone());
    // The newest copy: the status write above moved its resourceVersion.
    let mut fresh = match api.get(&ns.name_any()).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if let Some(f) = fresh.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
        f.retain(|f| f != FINALIZER);
    }
    match api
        .replace_subresource("finalize", &ns.name_any(), &PostParams::default(), &fresh)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
