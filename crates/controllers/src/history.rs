//! ControllerRevision history shared by StatefulSets and DaemonSets (upstream's
//! pkg/controller/history): revisions named `<owner>-<hash>`, numbered, matched by data, pruned.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::hash::template_hash;
use crate::owners;

/// What creating a revision can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}: too many ControllerRevision hash collisions")]
    Collisions(String),
}

/// The label holding a revision's hash (upstream's `ControllerRevisionHashLabel`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Upstream's `ControllerRevisionName`: the prefix cut to 223 characters so the name stays
/// a valid DNS subdomain.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let cut = prefix
        .char_indices()
        .nth(223)
        .map(|(i, _)| i)
        .unwrap_or(prefix.len());
    format!("{}-{hash}", &prefix[..cut])
}

/// The data of a revision: `{"spec": {"template": <template, "$patch": "replace">}}`, the
/// strategic patch `kubectl rollout undo` applies to go back to it.
pub fn template_patch(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision's data holds (without the `$patch` directive).
pub fn template_of(rev: &ControllerRevision) -> Option<Value> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    Some(t)
}

/// The hash of a revision's data and collision count (upstream's HashControllerRevision).
pub fn hash_of(data: &Value, collision_count: Option<i32>) -> String {
    template_hash(data, collision_count)
}

/// A revision of the owner `owner` (in `namespace`, named `owner_name`) holding `data`,
/// numbered `number`, labelled `labels`; named after the hash of its data.
pub fn new_revision(
    owner: OwnerReference,
    namespace: &str,
    labels: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
    data: Value,
    number: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let hash = hash_of(&data, collision_count);
    let mut labels = labels;
    labels.insert(HASH_LABEL.into(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name, &hash)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// Same data (upstream's EqualRevision also compares the hash label; equal data hash equal).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// Oldest first: by number, then creation time, then name (upstream's ByRevision).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t = |r: &ControllerRevision| r.metadata.creation_timestamp.clone().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The number the next revision gets: one past the highest.
pub fn next_number(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Revisions in the owner's namespace its selector matches, after adopting orphans and
/// releasing ones it no longer matches (upstream's ListControllerRevisions + ClaimControllerRevisions).
pub async fn claimed(
    api: &Api<ControllerRevision>,
    owner: &OwnerReference,
    owner_deleting: bool,
    selector: Option<&LabelSelector>,
) -> Result<Vec<ControllerRevision>, kube::Error> {
    let all = api.list(&ListParams::default()).await?.items;
    let empty = BTreeMap::new();
    let matches = |r: &ControllerRevision| match selector {
        Some(s) => capstan_scheduler::selectors::selector_matches(
            s,
            r.metadata.labels.as_ref().unwrap_or(&empty),
        ),
        None => false,
    };
    let all = all.into_iter().map(std::sync::Arc::new).collect();
    let mut revs: Vec<ControllerRevision> = owners::claim(api, owner, owner_deleting, all, matches)
        .await
        .into_iter()
        .map(std::sync::Arc::unwrap_or_clone)
        .collect();
    sort(&mut revs);
    Ok(revs)
}

/// Create `rev`; if its name is taken by a revision with other data, count a collision
/// (bumping `collision_count`, which the owner's status must then carry) and rename.
pub async fn create(
    api: &Api<ControllerRevision>,
    mut rev: ControllerRevision,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    let data = rev
        .data
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or(Value::Null);
    let owner_name = owners::controller_of(&rev.metadata)
        .map(|o| o.name.clone())
        .unwrap_or_default();
    for _ in 0..100 {
        let hash = hash_of(&data, Some(*collision_count));
        rev.metadata.name = Some(revision_name(&owner_name, &hash));
        rev.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash);
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => return Ok(r),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let name = rev.metadata.name.clone().unwrap_or_default();
                let existing = api.get(&name).await?;
                if equal(&existing, &rev) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Collisions(owner_name))
}

/// The owner's update revision for `template` (upstream's getStatefulSetRevisions /
/// constructHistory): the newest revision with equal data, renumbered to be the newest if it
/// is not; else a new one. Returns it and every claimed revision, oldest first.
#[allow(clippy::too_many_arguments)]
pub async fn update_revision(
    api: &Api<ControllerRevision>,
    owner: &OwnerReference,
    namespace: &str,
    selector: &LabelSelector,
    labels: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
    template: &Value,
    collision: &mut i32,
) -> Result<(ControllerRevision, Vec<ControllerRevision>), Error> {
    let mut revs = claimed(api, owner, false, Some(selector)).await?;
    let candidate = new_revision(
        owner.clone(),
        namespace,
        labels,
        annotations,
        template_patch(template),
        next_number(&revs),
        Some(*collision),
    );
    let update = match revs.iter().rposition(|r| equal(r, &candidate)) {
        // The newest revision already holds this template.
        Some(i) if i + 1 == revs.len() => revs[i].clone(),
        // An older one does (a rollback): it becomes the newest.
        Some(i) => {
            let r = renumber(api, &revs[i], candidate.revision).await?;
            revs[i] = r.clone();
            r
        }
        None => {
            let r = create(api, candidate, collision).await?;
            revs.push(r.clone());
            r
        }
    };
    sort(&mut revs);
    Ok((update, revs))
}

/// The hash label of a revision.
pub fn hash_label(rev: &ControllerRevision) -> &str {
    rev.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

/// Give an existing revision a new number (upstream's UpdateControllerRevision).
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    number: i64,
) -> Result<ControllerRevision, kube::Error> {
    api.patch(
        rev.metadata.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Merge(json!({"revision": number})),
    )
    .await
}

/// Delete the oldest revisions not in `live` beyond `limit` (revisionHistoryLimit). `revs`
/// is sorted oldest first.
pub async fn truncate(
    api: &Api<ControllerRevision>,
    revs: &[ControllerRevision],
    live: &HashSet<String>,
    limit: i32,
) -> Result<(), kube::Error> {
    let history: Vec<&ControllerRevision> = revs
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or("")))
        .collect();
    let excess = history.len().saturating_sub(limit.max(0) as usize);
    for r in history.into_iter().take(excess) {
        let name = r.metadata.name.as_deref().unwrap_or("");
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: i64, data: Value) -> ControllerRevision {
        new_revision(
            OwnerReference {
                name: "web".into(),
                ..Default::default()
            },
            "ns",
            BTreeMap::new(),
            None,
            data,
            n,
            None,
        )
    }

    #[test]
    fn names_numbers_and_equality() {
        let a = rev(1, template_patch(&json!({"spec": {"x": 1}})));
        let b = rev(2, template_patch(&json!({"spec": {"x": 2}})));
        let name = a.metadata.name.clone().unwrap();
        assert!(name.starts_with("web-"));
        assert_eq!(
            a.metadata.labels.as_ref().unwrap()[HASH_LABEL],
            name["web-".len()..]
        );
        assert!(!equal(&a, &b));
        assert!(equal(
            &a,
            &rev(5, template_patch(&json!({"spec": {"x": 1}})))
        ));
        let mut v = vec![b.clone(), a.clone()];
        sort(&mut v);
        assert_eq!(v[0].revision, 1);
        assert_eq!(next_number(&v), 3);
        assert_eq!(template_of(&a), Some(json!({"spec": {"x": 1}})));
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
    }
}
