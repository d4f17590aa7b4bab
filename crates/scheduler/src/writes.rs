//! What the scheduler writes through the API: the Binding, the PodScheduled condition and
//! nominatedNodeName, Events (Scheduled, FailedScheduling, Preempted) and preemption deletes.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub const SCHEDULER_NAME: &str = "default-scheduler";

fn pods(client: &Client, ns: &str) -> Api<Pod> {
    Api::namespaced(client.clone(), ns)
}

fn meta(pod: &Pod) -> (&str, &str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
    )
}

/// POST pods/{name}/binding (the API server sets spec.nodeName and PodScheduled=True).
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let (ns, name, uid) = meta(pod);
    let body = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    pods(client, ns)
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &body,
        )
        .await
        .map(|_| ())
}

/// Whether the pod already says exactly this (upstream skips the write then).
pub fn condition_is(pod: &Pod, message: &str, nominated: Option<&str>) -> bool {
    let status = pod.status.as_ref();
    let same_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
    let same_nominated =
        nominated.is_none() || status.and_then(|s| s.nominated_node_name.as_deref()) == nominated;
    same_condition && same_nominated
}

/// PodScheduled=False, reason Unschedulable (and nominatedNodeName after a preemption).
pub async fn set_unschedulable(
    client: &Client,
    pod: &Pod,
    message: &str,
    nominated: Option<&str>,
) -> Result<(), kube::Error> {
    let (ns, name, _) = meta(pod);
    let mut status = json!({"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]});
    if let Some(n) = nominated {
        status["nominatedNodeName"] = json!(n);
    }
    pods(client, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": status})),
        )
        .await
        .map(|_| ())
}

pub async fn clear_nomination(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let (ns, name, _) = meta(pod);
    pods(client, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nominatedNodeName": null}})),
        )
        .await
        .map(|_| ())
}

/// A core/v1 Event about `pod` (what `kubectl describe pod` lists), from default-scheduler.
pub async fn event(
    client: &Client,
    pod: &Pod,
    type_: &str,
    reason: &str,
    action: &str,
    message: &str,
) {
    let (ns, name, uid) = meta(pod);
    let now = Timestamp::now();
    let ev = Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(uid.into()),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        action: Some(action.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(SCHEDULER_NAME.into()),
        ..Default::default()
    };
    if let Err(e) = create_unread(client, ns, &ev).await {
        // Events are best effort, as upstream's recorder: the condition carries the news.
        tracing::debug!(error = %e, pod = name, reason, "could not record an event");
    }
}

/// POST an Event, not decoding the Event the server answers with (nothing reads it, and a
/// Scheduled Event is written for every pod placed).
async fn create_unread(client: &Client, ns: &str, ev: &Event) -> Result<(), kube::Error> {
    let body = serde_json::to_vec(ev).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/events"))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(req).await.map(|_| ())
}

/// Evict a preemption victim as upstream: mark DisruptionTarget, then DELETE with the pod's
/// own grace period.
pub async fn evict(
    client: &Client,
    victim: &Pod,
    preemptor: &Pod,
    node: &str,
) -> Result<(), kube::Error> {
    let (ns, name, uid) = meta(victim);
    let api = pods(client, ns);
    let cond = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(cond))
        .await
    {
        tracing::debug!(error = %e, pod = name, "could not mark the preemption victim");
    }
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    let msg = format!(
        "Preempted by pod {} on node {node}",
        preemptor.metadata.uid.as_deref().unwrap_or("")
    );
    event(client, victim, "Normal", "Preempted", "Preempting", &msg).await;
    Ok(())
}
