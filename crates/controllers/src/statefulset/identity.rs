//! A StatefulSet pod's stable identity (upstream's stateful_set_utils.go): the name
//! `<set>-<ordinal>`, its labels, hostname/subdomain, and its claims `<claim>-<set>-<ordinal>`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use crate::cached_pod::Pod;
use crate::pods;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The revision a pod was made from (its value is the ControllerRevision's name).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ordinal of `pod_name` if it is a member of the set `set_name` (upstream's
/// getParentNameAndOrdinal + isMemberOf).
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let (parent, ord) = pod_name.rsplit_once('-')?;
    if parent != set_name || ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ord.parse().ok()
}

pub fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

pub fn claim_name(claim: &str, set_name: &str, ordinal: i32) -> String {
    format!("{claim}-{set_name}-{ordinal}")
}

/// The first ordinal (`spec.ordinals.start`, 0 by default).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

/// The set's claims for `ordinal`, named and labelled as upstream's getPersistentVolumeClaims
/// (the template's labels plus the selector's matchLabels).
pub fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let name = set.metadata.name.as_deref().unwrap_or("");
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut c = t.clone();
            let tname = t.metadata.name.clone().unwrap_or_default();
            c.metadata = ObjectMeta {
                name: Some(claim_name(&tname, name, ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: t.metadata.labels.clone(),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            };
            let labels = c.metadata.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            c.status = None;
            c
        })
        .collect()
}

/// The pod of `ordinal` made from `template` (the revision's), labelled with `revision`.
pub fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    owner: OwnerReference,
    ordinal: i32,
    revision: &str,
) -> pods::NewPod {
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    let name = pod_name(set_name, ordinal);
    let mut pod = pods::from_template(template, owner, set_name);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let service = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = service;
    // Each claim template becomes a volume of that name, replacing a template volume of
    // the same name (upstream's updateStorage).
    let claim_volumes: Vec<Volume> = claims(set, ordinal)
        .into_iter()
        .zip(
            set.spec
                .iter()
                .flat_map(|s| s.volume_claim_templates.iter().flatten()),
        )
        .map(|(c, t)| Volume {
            name: t.metadata.name.clone().unwrap_or_default(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: c.metadata.name.unwrap_or_default(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    if !claim_volumes.is_empty() {
        let mut volumes = claim_volumes.clone();
        for v in spec.volumes.take().into_iter().flatten() {
            if !claim_volumes.iter().any(|c| c.name == v.name) {
                volumes.push(v);
            }
        }
        spec.volumes = Some(volumes);
    }
    pod
}

/// The revision label of a pod.
pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

/// Whether the pod carries the identity labels of `ordinal`.
pub fn labels_match(pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.metadata.labels.as_ref();
    labels.and_then(|l| l.get(POD_NAME_LABEL)) == pod.metadata.name.as_ref()
        && labels.and_then(|l| l.get(POD_INDEX_LABEL)) == Some(&ordinal.to_string())
}

/// Whether the pod carries the identity labels and hostname of `ordinal` (upstream's
/// identityMatches, less the name, which is fixed).
pub fn identity_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let service = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty());
    labels
        .and_then(|l| l.get(POD_NAME_LABEL))
        .map(String::as_str)
        == Some(name)
        && labels.and_then(|l| l.get(POD_INDEX_LABEL)) == Some(&ordinal.to_string())
        && pod.spec.as_ref().and_then(|s| s.hostname.as_deref()) == Some(name)
        && pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()) == service
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_and_claims_are_named_by_ordinal() {
        assert_eq!(ordinal_of("web", "web-3"), Some(3));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webs-1"), None);
        assert_eq!(ordinal_of("my-web", "my-web-10"), Some(10));
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "www", "emptyDir": {}}, {"name": "x", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .unwrap();
        let c = claims(&set, 2);
        assert_eq!(c[0].metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(c[0].metadata.labels.as_ref().unwrap()["app"], "w");
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = crate::pods::as_cached(&new_pod(
            &set,
            &template,
            OwnerReference::default(),
            2,
            "web-abc",
        ));
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 2);
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        assert!(identity_matches(&set, &pod, 2) && labels_match(&pod, 2));
        assert_eq!(revision_of(&pod), "web-abc");
    }
}
