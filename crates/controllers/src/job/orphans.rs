//! Pods left holding the tracking finalizer by a Job that is gone (deleted with Background
//! propagation while running) or that no longer controls them: the finalizer is removed so
//! the pods can go (upstream's syncOrphanPod).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::{has_tracking_finalizer, is_finished, pod_control};
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::owners::controller_of;

/// Whether the Job `name` with `uid` exists and is still running (so its pods are its own
/// to count). The cache first; the API before letting a pod go.
async fn owner_running(ctx: &Context, ns: &str, name: &str, uid: &str) -> bool {
    let cached = ctx
        .jobs()
        .store
        .get(&ObjectRef::<Job>::new(name).within(ns));
    if cached.is_some_and(|j| j.metadata.uid.as_deref() == Some(uid) && !is_finished(&j)) {
        return true;
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(j)) => j.metadata.uid.as_deref() == Some(uid) && !is_finished(&j),
        Ok(None) => false,
        // Unsure: keep the finalizer; the next change of the pod asks again.
        Err(_) => true,
    }
}

enum Change {
    Pod(Arc<Pod>),
    Job(Arc<Job>),
}

/// Watch pod changes (a pod whose Job is gone) and Job changes (a deleted Job's pods: they
/// may never change again, so nothing else would bring them here).
pub async fn release(
    ctx: Arc<Context>,
    pods: impl Stream<Item = Arc<Pod>>,
    jobs: impl Stream<Item = Arc<Job>>,
) {
    let changes = futures::stream::select(pods.map(Change::Pod), jobs.map(Change::Job));
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        match change {
            Change::Pod(pod) => release_if_orphaned(&ctx, &pod).await,
            Change::Job(job) => {
                let ns = job.metadata.namespace.clone().unwrap_or_default();
                let name = job.metadata.name.clone().unwrap_or_default();
                let uid = job.metadata.uid.clone().unwrap_or_default();
                // The informer applied the change before telling us: absent means deleted.
                let gone = ctx
                    .jobs()
                    .store
                    .get(&ObjectRef::<Job>::new(&name).within(&ns))
                    .is_none_or(|j| j.metadata.uid.as_deref() != Some(uid.as_str()));
                if !gone {
                    continue;
                }
                let pods: Vec<Arc<Pod>> = ctx.pods().controlled_by(&ns, &uid);
                for p in pods {
                    release_if_orphaned(&ctx, &p).await;
                }
            }
        }
    }
}

async fn release_if_orphaned(ctx: &Context, pod: &Pod) {
    if !has_tracking_finalizer(pod) {
        return;
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let keep = match controller_of(&pod.metadata) {
        Some(r) if r.kind == "Job" && r.api_version == "batch/v1" => {
            owner_running(ctx, &ns, &r.name, &r.uid).await
        }
        // Another controller's pod: not ours to touch.
        Some(_) => true,
        None => false,
    };
    if keep {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    match pod_control::remove_finalizer(&api, pod).await {
        Ok(()) => {
            tracing::debug!(pod = %crate::pods::key(&pod.metadata), "released an orphaned job pod")
        }
        Err(e) => {
            tracing::warn!(pod = %crate::pods::key(&pod.metadata), error = %e, "could not release an orphaned job pod")
        }
    }
}
