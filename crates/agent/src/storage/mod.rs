//! The node's local-path provisioner (k3s ships rancher's; this is capstan's own, under the
//! same provisioner name): the node owns its disk, so only the agent of the node a claim was
//! scheduled to creates its directory and PersistentVolume (`provision`), and only that agent
//! removes both when the volume is Released under the `Delete` policy (`reclaim`).
//!
//! Two kube-rs Controllers (claims, volumes) reconcile everything at start, so what a
//! previous agent left half-done is finished after a restart.

mod provision;
mod reclaim;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capstan_events::Recorder;
use capstan_slim::Action;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::runtime::watcher;
use kube::Api;

/// The provisioner name (rancher's local-path-provisioner's, so k3s manifests work as-is).
pub const PROVISIONER: &str = "rancher.io/local-path";
/// On every volume it made: which node's disk holds it (k3s's annotation).
pub const ANN_NODE: &str = "local.path.provisioner/selected-node";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// What both loops share.
pub struct Provisioner {
    client: kube::Client,
    node: String,
    /// `<data-dir>/agent/storage`: every volume's directory lives here.
    root: PathBuf,
    recorder: Recorder,
}

/// Runs until dropped.
pub async fn run(client: kube::Client, node: String, root: PathBuf) {
    let recorder = Recorder::new(client.clone(), "rancher.io/local-path").with_host(node.clone());
    let p = Arc::new(Provisioner {
        client: client.clone(),
        node,
        root,
        recorder,
    });
    let claims = capstan_slim::controller(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(provision::reconcile, on_claim_error, p.clone());
    let volumes = capstan_slim::controller(
        Api::<PersistentVolume>::all(client),
        watcher::Config::default(),
    )
    .run(reclaim::reconcile, on_volume_error, p);
    futures::join!(claims, volumes);
}

fn on_claim_error(
    claim: Arc<PersistentVolumeClaim>,
    err: &StorageError,
    _p: Arc<Provisioner>,
) -> Action {
    tracing::warn!(
        claim = %format!("{}/{}", claim.metadata.namespace.as_deref().unwrap_or(""), claim.metadata.name.as_deref().unwrap_or("")),
        error = %err,
        "local-path: provisioning failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

fn on_volume_error(pv: Arc<PersistentVolume>, err: &StorageError, _p: Arc<Provisioner>) -> Action {
    tracing::warn!(
        volume = pv.metadata.name.as_deref().unwrap_or(""),
        error = %err,
        "local-path: deleting a released volume failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}
