//! The taint eviction controller (upstream's taint-eviction-controller): pods on a node with
//! NoExecute taints they do not tolerate are deleted at once, those tolerating them for
//! `tolerationSeconds` when that runs out — each marked DisruptionTarget first.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::{Action, Controller};
use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::events::{EventType, Recorder};

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        recorder: ctx.recorder("taint-eviction-controller"),
    });
    let nodes = ctx.nodes();
    let node_store = nodes.store.clone();
    // A pod change matters only on a node with NoExecute taints (a pod bound there late).
    Controller::for_shared_stream(nodes.subscribe(), nodes.store.clone())
        .watches_shared_stream(ctx.pods().subscribe(), move |pod: Arc<Pod>| {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone())?;
            let r = ObjectRef::<Node>::new(&node);
            let tainted = node_store
                .get(&r)
                .is_some_and(|n| !no_execute(&n).is_empty());
            tainted.then_some(r)
        })
        .run(reconcile, error_policy, lp)
        .await;
}

fn error_policy(node: Arc<Node>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&node.name_any());
    tracing::warn!(node = %node.name_any(), attempts, error = %err, "taint eviction failed; retrying");
    Action::requeue(delay)
}

fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect()
}

/// upstream's Toleration.ToleratesTaint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// How long the pod may stay with these taints: `None` for ever, `Some(0)` not at all
/// (upstream's getMinTolerationTime over the tolerations that match).
pub fn toleration_seconds(tolerations: &[Toleration], taints: &[Taint]) -> Option<i64> {
    let mut min: Option<i64> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(0);
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                min = Some(min.map_or(s, |m: i64| m.min(s)));
            }
        }
    }
    min
}

async fn reconcile(node: Arc<Node>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let name = node.name_any();
    let taints = no_execute(&node);
    if taints.is_empty() {
        lp.backoff.reset(&name);
        return Ok(Action::await_change());
    }
    // The countdown starts when the taints were added (the earliest of them).
    let now = Timestamp::now();
    let since = taints
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .min()
        .unwrap_or(now)
        .as_millisecond();
    let mut next: Option<i64> = None;
    for pod in lp.ctx.pods().store.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match toleration_seconds(&tolerations, &taints) {
            None => {}
            Some(secs) => {
                let due = since.saturating_add(secs.saturating_mul(1000));
                if due <= now.as_millisecond() {
                    evict(&lp, &pod).await?;
                } else {
                    next = Some(next.map_or(due, |n: i64| n.min(due)));
                }
            }
        }
    }
    lp.backoff.reset(&name);
    Ok(match next {
        Some(due) => Action::requeue(Duration::from_millis(
            u64::try_from(due - now.as_millisecond()).unwrap_or(0) + 10,
        )),
        None => Action::await_change(),
    })
}

/// DisruptionTarget first (so the pod's owner knows why), then delete.
async fn evict(lp: &Loop, pod: &Pod) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(lp.ctx.client.clone(), &ns);
    let patch = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Timestamp::now().to_string()}]}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    lp.recorder
        .record(
            pod,
            EventType::Normal,
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, pod = %name, "evicted from a NoExecute-tainted node");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_shortest_matching_toleration_counts() {
        let taint = Taint {
            key: crate::node_lifecycle::UNREACHABLE.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let default_300 = tol(json!({"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        let short = tol(json!({"operator": "Exists", "tolerationSeconds": 2}));
        let forever = tol(json!({"operator": "Exists"}));
        let other = tol(json!({"key": "x", "operator": "Exists"}));
        let t = std::slice::from_ref(&taint);
        assert_eq!(
            toleration_seconds(std::slice::from_ref(&default_300), t),
            Some(300)
        );
        assert_eq!(toleration_seconds(&[default_300, short], t), Some(2));
        assert_eq!(toleration_seconds(&[forever], t), None);
        assert_eq!(toleration_seconds(&[other], t), Some(0));
        assert_eq!(toleration_seconds(&[], t), Some(0));
    }
}
