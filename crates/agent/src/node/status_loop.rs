//! Node status, as the kubelet posts it: conditions recomputed from the host every status
//! period (10 s) and posted when they differ from the stored Node's, or every
//! `status_report_interval` regardless, or when the images in the store changed (an import,
//! a pull, a removal); a deleted Node is registered again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::Value;
use tokio::sync::watch;

use super::host::HostFacts;
use super::images_status::images_status;
use super::pressure::Pressure;
use super::registration::{post_status, register, static_status, NodeIdentity};
use crate::clock::now_ms;
use crate::images::ImageStore;
use crate::node_heartbeat::{conditions_differ, conditions_json};

/// The kubelet's `nodeStatusUpdateFrequency`.
pub const STATUS_PERIOD: Duration = Duration::from_secs(10);

pub struct StatusLoop {
    pub client: kube::Client,
    pub id: NodeIdentity,
    pub facts: HostFacts,
    pub agent_root: PathBuf,
    pub report_interval: Duration,
    pub images: Arc<ImageStore>,
    /// Why the runtime cannot run pods (None: it can); a change is posted at once.
    pub runtime_problem: watch::Receiver<Option<String>>,
    pub node_uid: Arc<watch::Sender<Option<String>>>,
}

/// The conditions of a stored Node, for lastTransitionTime and change detection.
pub fn stored_conditions(node: &Node) -> Option<Value> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| serde_json::to_value(c).ok())
}

impl StatusLoop {
    /// Runs until the process ends; `stored` is the Node as registration left it.
    pub async fn run(mut self, stored: Node) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut fresh = Some(stored);
        let mut previous = None;
        // The first post fills in what an adopted Node may lack (a new port, new facts).
        let mut last_post: Option<Instant> = None;
        let mut runtime_watched = true;
        let mut posted_images: Option<Value> = None;
        loop {
            // The Node as stored now, as the kubelet reads it each period: conditions someone
            // else changed (the lifecycle controller's Unknown) are put right at once, and a
            // deleted Node is registered again.
            let current = match fresh.take() {
                Some(n) => Ok(Some(n)),
                None => api.get_opt(&self.id.name).await,
            };
            match current {
                Ok(Some(node)) => previous = stored_conditions(&node),
                Ok(None) => {
                    if self.reregister(&mut previous).await {
                        last_post = Some(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %self.id.name, error = %e, "could not read the node")
                }
            }
            let problem = self.runtime_problem.borrow_and_update().clone();
            let want = Pressure::read(&self.agent_root).conditions(problem.as_deref());
            let due = last_post.is_none_or(|t| t.elapsed() >= self.report_interval);
            let images = images_status(&self.images);
            let images_changed = images.is_some() && images != posted_images;
            if due || images_changed || conditions_differ(&want, previous.as_ref()) {
                let mut status = static_status(&self.id, &self.facts);
                status["conditions"] = conditions_json(&want, previous.as_ref(), now_ms());
                if let Some(images) = &images {
                    status["images"] = images.clone();
                }
                match post_status(&self.client, &self.id.name, status).await {
                    Ok(node) => {
                        previous = stored_conditions(&node);
                        last_post = Some(Instant::now());
                        if images.is_some() {
                            posted_images = images;
                        }
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        if self.reregister(&mut previous).await {
                            last_post = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.id.name, error = %e, "could not post node status")
                    }
                }
            }
            let period = tokio::time::sleep(STATUS_PERIOD);
            if runtime_watched {
                tokio::select! {
                    _ = period => {}
                    r = self.runtime_problem.changed() => runtime_watched = r.is_ok(),
                }
            } else {
                // Nobody reports on the runtime any more: the period alone paces the loop.
                period.await;
            }
        }
    }

    /// Someone deleted the Node while the agent runs: register it again (a new uid, which
    /// the Lease's owner reference follows).
    async fn reregister(&self, previous: &mut Option<Value>) -> bool {
        let problem = self.runtime_problem.borrow().clone();
        let want = Pressure::read(&self.agent_root).conditions(problem.as_deref());
        match register(&self.client, &self.id, &self.facts, &want, now_ms()).await {
            Ok(node) => {
                tracing::info!(node = %self.id.name, "the Node was deleted: registered it again");
                *previous = stored_conditions(&node);
                self.node_uid.send_replace(node.metadata.uid.clone());
                true
            }
            Err(e) => {
                tracing::warn!(node = %self.id.name, error = %e, "could not register the node again");
                false
            }
        }
    }
}
