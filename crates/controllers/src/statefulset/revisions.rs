//! A StatefulSet's current and update revisions (upstream's getStatefulSetRevisions): the
//! update revision is the set's template as a ControllerRevision; current is the status's.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;

use crate::history;

pub struct Revisions {
    pub current: ControllerRevision,
    pub update: ControllerRevision,
    /// Every claimed revision, oldest first.
    pub all: Vec<ControllerRevision>,
}

/// Find or make the update revision; the current one is the status's, else the update one.
pub async fn sync(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    owner: &OwnerReference,
    collision: &mut i32,
) -> Result<Revisions, history::Error> {
    let spec = set.spec.clone().unwrap_or_default();
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let (update, all) = history::update_revision(
        api,
        owner,
        set.metadata.namespace.as_deref().unwrap_or(""),
        &spec.selector,
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        set.metadata.annotations.clone(),
        &template,
        collision,
    )
    .await?;
    let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = all
        .iter()
        .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok(Revisions {
        current,
        update,
        all,
    })
}
