//! The pod garbage collector (upstream's pkg/controller/podgc): pods bound to nodes that no
//! longer exist, unscheduled pods being deleted, and terminated pods beyond
//! `--terminated-pod-gc-threshold` (oldest first) are force-deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

use crate::cached_pod::Pod;
use crate::context::Context;
use crate::pods;

/// How often a pass runs without a reason to (upstream's gcCheckPeriod).
const PERIOD: Duration = Duration::from_secs(20);

pub async fn run(ctx: Arc<Context>) {
    ctx.pods().ready().await;
    ctx.nodes().ready().await;
    let mut node_changes = ctx.nodes().subscribe().boxed();
    loop {
        pass(&ctx).await;
        // A deleted node is a reason to look now; otherwise wait out the period.
        let deadline = tokio::time::sleep(PERIOD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                change = node_changes.next() => match change {
                    Some(node) if ctx.nodes().store.get(&ObjectRef::from_obj(node.as_ref())).is_none() => break,
                    Some(_) => {}
                    None => return,
                },
            }
        }
    }
}

async fn pass(ctx: &Context) {
    let all = ctx.pods().store.state();
    gc_terminated(ctx, &all).await;
    gc_orphaned(ctx, &all).await;
    gc_unscheduled_terminating(ctx, &all).await;
}

/// Terminated pods beyond the threshold, oldest first.
async fn gc_terminated(ctx: &Context, all: &[Arc<Pod>]) {
    let threshold = ctx.opts.terminated_pod_gc_threshold;
    if threshold == 0 {
        return;
    }
    let mut done: Vec<&Arc<Pod>> = all
        .iter()
        .filter(|p| pods::is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    if done.len() <= threshold {
        return;
    }
    // Upstream's byEvictionAndCreationTimestamp: evicted pods first, then the oldest (by
    // name within one second).
    done.sort_by_key(|p| {
        let evicted = pods::phase(p) == "Failed"
            && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
        (
            !evicted,
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
    let excess = done.len() - threshold;
    tracing::info!(
        terminated = done.len(),
        threshold,
        deleting = excess,
        "garbage collecting terminated pods"
    );
    for p in done.into_iter().take(excess) {
        force_delete(ctx, p, None).await;
    }
}

/// Pods bound to a node that is gone (checked with the API server, not just the cache).
async fn gc_orphaned(ctx: &Context, all: &[Arc<Pod>]) {
    let nodes = &ctx.nodes().store;
    let mut missing: HashSet<String> = HashSet::new();
    let mut present: HashSet<String> = HashSet::new();
    let api: Api<Node> = Api::all(ctx.client.clone());
    for p in all {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if present.contains(&node) || nodes.get(&ObjectRef::new(&node)).is_some() {
            continue;
        }
        if !missing.contains(&node) {
            match api.get_opt(&node).await {
                Ok(None) => {
                    missing.insert(node.clone());
                }
                Ok(Some(_)) => {
                    present.insert(node);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "pod gc: node lookup failed");
                    continue;
                }
            }
        }
        force_delete(ctx, p, Some("PodGC: node no longer exists")).await;
    }
}

/// Pods being deleted that never reached a node (nothing else would finish them).
async fn gc_unscheduled_terminating(ctx: &Context, all: &[Arc<Pod>]) {
    for p in all {
        let unscheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty);
        if unscheduled && p.metadata.deletion_timestamp.is_some() {
            force_delete(ctx, p, None).await;
        }
    }
}

/// Delete at once; a running pod is first marked Failed with DisruptionTarget, as upstream.
async fn force_delete(ctx: &Context, pod: &Pod, why: Option<&str>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let (Some(why), false) = (why, pods::is_terminal(pod)) {
        let patch = json!({"status": {"phase": "Failed", "conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": why, "lastTransitionTime": Timestamp::now().to_string()}]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(namespace = %ns, pod = %name, error = %e, "pod gc: could not mark the pod failed");
        }
    }
    let mut dp = DeleteParams::default().grace_period(0);
    if let Some(uid) = pod.uid() {
        dp = dp.preconditions(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        });
    }
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(namespace = %ns, pod = %name, "pod garbage collected"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(namespace = %ns, pod = %name, error = %e, "pod gc: delete failed"),
    }
}
