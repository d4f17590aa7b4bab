//! The server's own Node is labelled `node-role.kubernetes.io/control-plane` by the server
//! (as k3s does), since NodeRestriction keeps a node from giving itself a role label.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;

pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Label `node` once it exists; retried with back-off while the API refuses.
pub async fn label_control_plane(client: kube::Client, node: String) {
    let api: Api<Node> = Api::all(client);
    let body = json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "true"}}});
    let mut delay = Duration::from_millis(100);
    loop {
        match api
            .patch(&node, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %node, label = CONTROL_PLANE_LABEL, "labelled this server's node");
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => wait_for(&api, &node).await,
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "labelling this server's node failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Until the agent has registered the Node (or the watch ends: the caller tries again).
async fn wait_for(api: &Api<Node>, node: &str) {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={node}"))
        .timeout(60);
    let Ok(stream) = api.watch(&params, "0").await else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(WatchEvent::Added(_)) | Ok(WatchEvent::Modified(_))
        ) {
            return;
        }
    }
}
