//! Watches Nodes for the simulated ones: keeps their uid and conditions current and stops or
//! resumes a node when its `sim.capstan.io/stopped` annotation says so.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::fleet::Fleet;
use super::heartbeat::observe;
use super::ANNOTATION_STOPPED;

pub async fn run(fleet: Arc<Fleet>) {
    let api = capstan_slim::WatchApi::<Node>::all(fleet.client.clone());
    let mut events = capstan_slim::watch(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(n)) | Ok(Event::InitApply(n)) => {
                let Some(node) = n.metadata.name.as_deref().and_then(|name| fleet.node(name))
                else {
                    continue;
                };
                observe(node, &n);
                let stop = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_STOPPED))
                    .is_some_and(|v| v == "true");
                let resumed = node.stopped.send_if_modified(|s| {
                    let changed = *s != stop;
                    *s = stop;
                    changed
                }) && !stop;
                if resumed {
                    node.resumes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Err: the pod watch is gone (the simulator is stopping).
                    let _ = fleet.resumed.send(node.name.clone());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "node watch failed; retrying with back-off"),
        }
    }
}
