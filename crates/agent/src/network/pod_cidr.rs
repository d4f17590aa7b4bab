//! Which pod network this node has: the Node's `spec.podCIDR` once set (by `--pod-cidr` at
//! registration, or by the cluster's node-ipam loop), waited for when neither has set it yet.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

use super::{Cidr, NetworkError};

/// The Node's podCIDR, as a `Cidr`. An explicit `--pod-cidr` is recorded on a Node that has
/// none (one adopted from an older agent); a Node that already has another keeps it (the
/// field is immutable), which is logged.
pub async fn resolve(
    client: &kube::Client,
    node: &str,
    explicit: Option<&str>,
) -> Result<Cidr, NetworkError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match api.get_opt(node).await {
            Ok(Some(n)) => {
                if let Some(have) = node_cidr(&n) {
                    let cidr = Cidr::parse(&have)?;
                    if let Some(want) = explicit.filter(|w| Cidr::parse(w).ok() != Some(cidr)) {
                        tracing::warn!(node, pod_cidr = %cidr, flag = want, "the Node already has another podCIDR; using it");
                    }
                    return Ok(cidr);
                }
                if let Some(want) = explicit {
                    let cidr = Cidr::parse(want)?;
                    let body = serde_json::json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
                    match api
                        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                    {
                        Ok(_) => return Ok(cidr),
                        // Set by someone else meanwhile: read it again.
                        Err(e) => {
                            tracing::warn!(node, error = %e, "recording the node's podCIDR failed")
                        }
                    }
                } else if !logged {
                    tracing::info!(node, "waiting for the node's podCIDR (the cluster's node-ipam loop allocates it)");
                    logged = true;
                }
            }
            Ok(None) => tracing::warn!(node, "the Node is gone; waiting for it again"),
            Err(e) => tracing::warn!(node, error = %e, "reading the Node failed"),
        }
        wait_for_change(&api, node).await;
    }
}

fn node_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .pod_cidr
        .clone()
        .filter(|c| !c.is_empty())
}

/// Until the Node changes (or a bounded while passes, so a broken watch never parks the
/// agent for good).
async fn wait_for_change(api: &Api<Node>, node: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let changed = async {
        let stream = capstan_slim::watcher(api.clone(), config);
        futures::pin_mut!(stream);
        let mut seen = 0;
        while let Ok(Some(ev)) = stream.try_next().await {
            if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev {
                if node_cidr(&n).is_some() {
                    return;
                }
            }
            seen += 1;
            if seen > 1000 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), changed).await;
}
