//! The binder's matching rules (upstream `pkg/controller/volume/persistentvolume/util`): which
//! Available PersistentVolume a claim gets — pre-bound first, else the smallest that fits.

use std::collections::BTreeMap;

use capstan_scheduler::quantity;
use capstan_scheduler::selectors::{selector_matches, terms_match};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const ANN_BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

fn annotation<'a>(ann: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    ann.and_then(|a| a.get(key)).map(String::as_str)
}

/// The claim's class: the beta annotation wins over `spec.storageClassName`; unset is "".
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    annotation(claim.metadata.annotations.as_ref(), ANN_BETA_CLASS)
        .or_else(|| {
            claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or("")
}

/// The volume's class, by the same rule.
pub fn volume_class(pv: &PersistentVolume) -> &str {
    annotation(pv.metadata.annotations.as_ref(), ANN_BETA_CLASS)
        .or_else(|| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or("")
}

pub fn claim_annotation<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    annotation(claim.metadata.annotations.as_ref(), key)
}

pub fn volume_annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    annotation(pv.metadata.annotations.as_ref(), key)
}

/// Bytes of a `storage` quantity (rounded up); None when absent.
pub fn storage(map: Option<&BTreeMap<String, Quantity>>) -> Option<i64> {
    map.and_then(|m| m.get("storage"))
        .map(|q| quantity::value(&q.0))
}

pub fn requested(claim: &PersistentVolumeClaim) -> i64 {
    storage(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .unwrap_or(0)
}

pub fn capacity(pv: &PersistentVolume) -> i64 {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or(0)
}

/// `Filesystem` unless it says `Block`.
pub fn claim_is_block(claim: &PersistentVolumeClaim) -> bool {
    claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
}

fn volume_is_block(pv: &PersistentVolume) -> bool {
    pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
}

/// upstream `IsVolumeBoundToClaim`: the claimRef names the claim, with its uid or none yet.
pub fn is_bound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name.as_deref() == claim.metadata.name.as_deref()
        && r.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref())
}

/// Every mode the claim asks for is one the volume offers.
pub fn access_modes_fit(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let offered = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[]);
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
        .iter()
        .all(|m| offered.contains(m))
}

/// A volume without node affinity is reachable from every node.
pub fn reachable_from(pv: &PersistentVolume, node: &Node) -> bool {
    match pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    {
        Some(sel) => terms_match(&sel.node_selector_terms, node),
        None => true,
    }
}

/// upstream `FindMatchingVolume`: a volume pre-bound to the claim wins; otherwise, unless
/// binding waits for a consumer, the smallest Available unclaimed volume of the claim's
/// class, access modes, volume mode and selector whose capacity covers the request. With
/// `node`, volumes not reachable from it are skipped.
pub fn find_best<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    delay_binding: bool,
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let want = requested(claim);
    let class = claim_class(claim);
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    let mut best: Option<(&PersistentVolume, i64)> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let size = capacity(pv);
        if size < want || volume_is_block(pv) != claim_is_block(claim) {
            continue;
        }
        let claimed = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some();
        if claimed && !is_bound_to(pv, claim) {
            continue;
        }
        if node.is_some_and(|n| !reachable_from(pv, n)) {
            continue;
        }
        if claimed {
            return Some(pv);
        }
        if delay_binding {
            continue;
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Available") {
            continue;
        }
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if selector.is_some_and(|s| !selector_matches(s, &labels)) {
            continue;
        }
        if volume_class(pv) != class || !access_modes_fit(claim, pv) {
            continue;
        }
        if best.is_none_or(|(_, s)| size < s) {
            best = Some((pv, size));
        }
    }
    best.map(|(pv, _)| pv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn best<'a>(c: &PersistentVolumeClaim, vols: &'a [PersistentVolume]) -> Option<&'a str> {
        find_best(c, vols, false, None).and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = [
            pv("big", "10Gi", json!({})),
            pv("small", "512Mi", json!({})),
            pv("fit", "1024Mi", json!({})),
            pv("mid", "2Gi", json!({})),
        ];
        assert_eq!(best(&claim(json!({})), &vols), Some("fit"));
    }

    #[test]
    fn only_available_unclaimed_volumes_are_candidates() {
        let vols = [
            pv("released", "1Gi", json!({"status": {"phase": "Released"}})),
            pv(
                "other",
                "1Gi",
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "d"}}}),
            ),
            pv("free", "5Gi", json!({})),
        ];
        assert_eq!(best(&claim(json!({})), &vols), Some("free"));
    }

    #[test]
    fn a_volume_pre_bound_to_the_claim_wins_even_when_binding_waits() {
        let vols = [
            pv("free", "1Gi", json!({})),
            pv(
                "mine",
                "3Gi",
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "c"}},
                                     "status": {"phase": "Pending"}}),
            ),
        ];
        let c = claim(json!({}));
        assert_eq!(best(&c, &vols), Some("mine"));
        let found = find_best(&c, &vols, true, None).and_then(|v| v.metadata.name.as_deref());
        assert_eq!(found, Some("mine"));
        // Binding delayed: a free volume is not taken before a consumer is placed.
        assert!(find_best(&c, &vols[..1], true, None).is_none());
    }

    #[test]
    fn selector_must_match_the_volume_labels() {
        let vols = [
            pv("plain", "1Gi", json!({})),
            pv(
                "fast",
                "2Gi",
                json!({"metadata": {"labels": {"tier": "fast"}}}),
            ),
        ];
        let c = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "fast"}}}}));
        assert_eq!(best(&c, &vols), Some("fast"));
        let c = claim(json!({"spec": {"selector": {"matchExpressions":
            [{"key": "tier", "operator": "In", "values": ["slow"]}]}}}));
        assert_eq!(best(&c, &vols), None);
    }

    #[test]
    fn every_requested_access_mode_must_be_offered() {
        let vols = [
            pv("rwo", "1Gi", json!({})),
            pv(
                "rwx",
                "2Gi",
                json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadWriteMany"]}}),
            ),
        ];
        let c = claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}}));
        assert_eq!(best(&c, &vols), Some("rwx"));
    }

    #[test]
    fn class_empty_matches_only_volumes_without_a_class() {
        let vols = [
            pv(
                "classed",
                "1Gi",
                json!({"spec": {"storageClassName": "gold"}}),
            ),
            pv("classless", "2Gi", json!({})),
        ];
        assert_eq!(best(&claim(json!({})), &vols), Some("classless"));
        let gold = claim(json!({"spec": {"storageClassName": "gold"}}));
        assert_eq!(best(&gold, &vols), Some("classed"));
        // The beta annotation names the class too.
        let beta = claim(json!({"metadata": {"annotations":
            {"volume.beta.kubernetes.io/storage-class": "gold"}}}));
        assert_eq!(best(&beta, &vols), Some("classed"));
    }

    #[test]
    fn volume_mode_and_node_affinity_must_agree() {
        let vols = [
            pv("block", "1Gi", json!({"spec": {"volumeMode": "Block"}})),
            pv(
                "elsewhere",
                "1Gi",
                json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms":
                [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}}),
            ),
            pv("here", "3Gi", json!({})),
        ];
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}}}),
        )
        .unwrap();
        let found = find_best(&claim(json!({})), &vols, false, Some(&node))
            .and_then(|v| v.metadata.name.as_deref());
        assert_eq!(found, Some("here"));
    }
}
