//! The pods a Job makes (its template plus the tracking finalizer, and for Indexed Jobs the
//! completion index annotation, label, hostname and `JOB_COMPLETION_INDEX`) and how it
//! removes them (the finalizer first unless the pod's end must still be counted).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::indexes::{FAILURE_COUNT_KEY, IGNORED_FAILURE_COUNT_KEY, INDEX_KEY};
use super::TRACKING_FINALIZER;
use crate::cached_pod::Pod;
use crate::{owners, pods};

const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Whether `job`'s selector picks a pod with `labels` (a missing or empty selector picks
/// nothing here, as upstream's GetPodJobs: a Job must not claim a whole namespace).
pub fn selects(job: &Job, labels: &std::collections::BTreeMap<String, String>) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|sel| {
            sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                || sel
                    .match_expressions
                    .as_ref()
                    .is_some_and(|e| !e.is_empty())
        })
        .is_some_and(|sel| capstan_scheduler::selectors::selector_matches(sel, labels))
}

/// Upstream's ClaimPods for a Job: of `candidates` (its namespace's pods that it controls or
/// that have no controller), the ones it controls after adopting the orphans its selector
/// picks (with the tracking finalizer, so their end is counted) and releasing owned pods it
/// no longer picks. A Job being deleted does neither.
pub async fn claim(
    api: &Api<Pod>,
    job: &Job,
    candidates: Vec<std::sync::Arc<Pod>>,
) -> Vec<std::sync::Arc<Pod>> {
    owners::claim_with(
        api,
        &owners::controller_ref(job),
        job.metadata.deletion_timestamp.is_some(),
        candidates,
        |p| selects(job, p.labels()),
        Some(TRACKING_FINALIZER),
    )
    .await
}

/// The pod `job` makes (for `index`, with the index's failures so far — counted, and
/// ignored by the pod failure policy — when `backoffLimitPerIndex` is set).
pub fn pod_for(job: &Job, index: Option<i32>, failures: Option<(i32, i32)>) -> pods::NewPod {
    let name = job.name_any();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{name}-{i}"),
        None => name.clone(),
    };
    let mut pod = pods::from_template(&template, owners::controller_ref(job), &prefix);
    let fins = pod.metadata.finalizers.get_or_insert_with(Vec::new);
    if !fins.iter().any(|f| f == TRACKING_FINALIZER) {
        fins.push(TRACKING_FINALIZER.to_string());
    }
    if let Some(i) = index {
        pod.annotations_mut()
            .insert(INDEX_KEY.to_string(), i.to_string());
        pod.labels_mut()
            .insert(INDEX_KEY.to_string(), i.to_string());
        if let Some((counted, ignored)) = failures {
            pod.annotations_mut()
                .insert(FAILURE_COUNT_KEY.to_string(), counted.to_string());
            // Written once an ignored failure happened, as upstream.
            if ignored > 0 {
                pod.annotations_mut()
                    .insert(IGNORED_FAILURE_COUNT_KEY.to_string(), ignored.to_string());
            }
        }
        if let Some(spec) = pod.spec.as_mut() {
            if spec.hostname.as_deref().unwrap_or("").is_empty() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                add_index_env(c);
            }
        }
    }
    pod
}

fn add_index_env(c: &mut Container) {
    let env = c.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: INDEX_ENV.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{INDEX_KEY}']"),
            }),
            ..Default::default()
        }),
    });
}

/// Remove the tracking finalizer (a JSON patch testing the list it replaces would race
/// with other writers; a strategic `$deleteFromPrimitiveList` removes just ours).
pub async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete `pod` (graceful, as the kubelet would end it). A pod already gone is fine.
pub async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
