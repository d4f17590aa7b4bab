//! The node's heartbeat: its Lease in `kube-node-lease` renewed every quarter of its
//! duration, owned by the Node so it goes when the Node is deleted.

use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::node_heartbeat::{renew_interval, renew_lease};

/// Runs until the process ends; `node_uid` follows the Node (re-registration changes it).
pub async fn run(
    client: kube::Client,
    node: String,
    node_uid: Arc<watch::Sender<Option<String>>>,
    duration_seconds: i32,
) {
    let every = renew_interval(duration_seconds);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cached = None;
    loop {
        ticker.tick().await;
        let uid = node_uid.borrow().clone();
        if let Err(e) = renew_lease(
            &client,
            &node,
            uid.as_deref(),
            duration_seconds,
            now_ms(),
            &mut cached,
        )
        .await
        {
            tracing::warn!(node = %node, error = %e, "could not renew the node's Lease");
        }
    }
}
