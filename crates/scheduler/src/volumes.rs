//! The VolumeBinding plugin without a storage driver: PreFilter (every PersistentVolumeClaim
//! a pod names exists, is not terminating, and is bound unless its StorageClass binds on
//! first consumer; bound claims' volumes restrict the pod to the nodes their `nodeAffinity`
//! names), Filter over those node selectors, and PreBind (an unbound first-consumer claim is
//! annotated with the chosen node, for the binder and the node's provisioner).
//! Only pods with claims pay: the scheduler calls none of this for the others.

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::plugins::{Code, Plugin, Rejection};
use crate::selectors::terms_match;

pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";

/// What PreFilter learned about a pod's claims.
#[derive(Debug, Default, Clone)]
pub struct ClaimNeeds {
    /// Unbound claims whose class waits for the first consumer: annotated at PreBind.
    pub select_node: Vec<String>,
    /// The `nodeAffinity` of the volumes bound claims name: a node must match them all.
    pub affinity: Vec<NodeSelector>,
}

pub fn claims(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect()
}

/// Err is upstream's pre-filter message; API errors other than 404 count as "not yet".
pub async fn check(client: &Client, pod: &Pod) -> Result<ClaimNeeds, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut needs = ClaimNeeds::default();
    let mut unbound_immediate = false;
    for name in claims(pod) {
        let pvc = match api.get_opt(&name).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
            Err(e) => return Err(format!("error getting PVC \"{ns}/{name}\": {e}")),
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let volume = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(volume) = volume {
            match Api::<PersistentVolume>::all(client.clone())
                .get_opt(volume)
                .await
            {
                Ok(Some(pv)) => needs.affinity.extend(
                    pv.spec
                        .and_then(|s| s.node_affinity)
                        .and_then(|a| a.required),
                ),
                Ok(None) => {
                    return Err(format!("pvc {ns}/{name} bound to non-existent pv {volume}"))
                }
                Err(e) => return Err(format!("error getting PV \"{volume}\": {e}")),
            }
            continue;
        }
        let class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let wait = if class.is_empty() {
            false
        } else {
            match Api::<StorageClass>::all(client.clone())
                .get_opt(&class)
                .await
            {
                Ok(Some(sc)) => sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"),
                Ok(None) => {
                    return Err(format!("storageclass.storage.k8s.io \"{class}\" not found"))
                }
                Err(e) => return Err(format!("error getting StorageClass \"{class}\": {e}")),
            }
        };
        if wait {
            needs.select_node.push(name);
        } else {
            unbound_immediate = true;
        }
    }
    if unbound_immediate {
        return Err("pod has unbound immediate PersistentVolumeClaims".into());
    }
    Ok(needs)
}

/// The Filter: the node must match every bound volume's node affinity.
pub fn filter(affinity: &[NodeSelector], node: &Node) -> Result<(), Rejection> {
    if affinity
        .iter()
        .all(|sel| terms_match(&sel.node_selector_terms, node))
    {
        Ok(())
    } else {
        Err(Rejection::new(
            Plugin::VolumeBinding,
            Code::Unresolvable,
            CONFLICT,
        ))
    }
}

/// PreBind: name the chosen node in each unbound first-consumer claim.
pub async fn select_node(
    client: &Client,
    pod: &Pod,
    node: &str,
    claims: &[String],
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let body = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
    for name in claims {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        tracing::debug!(claim = %name, node, "selected node for claim");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_affinity_restricts_nodes() {
        let sel: NodeSelector =
            serde_json::from_value(json!({"nodeSelectorTerms": [{"matchExpressions":
            [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}))
            .unwrap();
        let node = |n: &str| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}),
            )
            .unwrap()
        };
        assert!(filter(std::slice::from_ref(&sel), &node("a")).is_ok());
        let r = filter(&[sel], &node("b")).unwrap_err();
        assert_eq!(r.reason_list(), [CONFLICT]);
        assert!(filter(&[], &node("b")).is_ok());
    }
}
