//! Registration and heartbeats, as the kubelet does them: create the Node (or adopt an existing
//! one), renew its Lease every quarter of the lease duration, and post node status only when it
//! differs from what is stored or every `nodeStatusReportFrequency` (5 min).

use std::sync::Arc;
use std::time::Instant;

use capstan_slim::Slim;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use super::fleet::{lock, Fleet, SimNode};
use super::node_object::node_manifest;
use crate::api_retry::is_not_found;
use crate::clock::now_ms;
use crate::node_heartbeat::{conditions_differ, conditions_json, renew_lease as renew, Condition};

/// Create the Node, or adopt the one that exists (a restarted simulator keeps its podCIDR).
pub async fn register(fleet: &Fleet, node: &SimNode) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(fleet.client.clone());
    let manifest: Node =
        capstan_slim::from_json(&node_manifest(node, now_ms())).map_err(kube::Error::SerdeError)?;
    let (stored, existed) = fleet
        .writer
        .write("register node", || async {
            match api.create(&PostParams::default(), &manifest).await {
                Ok(n) => Ok((n, false)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok((api.get(&node.name).await?, true)),
                Err(e) => Err(e),
            }
        })
        .await?;
    observe(node, &stored);
    if existed {
        if let Some(cidr) = stored.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
            node.adopt_pod_cidr(cidr);
        }
        post_status(fleet, node).await?;
    }
    Ok(())
}

/// Remember what the API says about one of our nodes (uid, conditions).
pub fn observe(node: &SimNode, n: &Node) {
    if let Some(uid) = &n.metadata.uid {
        *lock(&node.uid) = Some(uid.clone());
    }
    let conds = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| serde_json::to_value(c).ok());
    *lock(&node.conditions) = conds;
}

/// Renewal slots per interval (a quarter of a second each at the default 10 s).
const RENEW_SLOTS: usize = 40;

/// One node's heartbeat loop; runs until the process ends.
pub async fn run(fleet: Arc<Fleet>, node: Arc<SimNode>) {
    let renew = fleet.config.lease_renew_interval();
    let report = fleet.config.status_report_interval;
    // Spread the fleet's renewals over the interval rather than in one burst, in a few
    // dozen slots: the nodes of a slot renew together, so the server commits their Leases
    // in one transaction (one fsync) instead of each alone. With 1,000 nodes evenly spread
    // every renewal was its own commit, 100 a second.
    let slots = fleet.ordered.len().clamp(1, RENEW_SLOTS);
    let mut next =
        tokio::time::Instant::now() + renew.mul_f64((node.index % slots) as f64 / slots as f64);
    tokio::time::sleep_until(next).await;
    let mut stopped = node.stopped.subscribe();
    let mut last_status = Instant::now();
    let mut status_due = false;
    loop {
        if *stopped.borrow_and_update() {
            tracing::info!(node = %node.name, "simulated node stopped: no heartbeats");
            if stopped.wait_for(|s| !*s).await.is_err() {
                return;
            }
            tracing::info!(node = %node.name, "simulated node resumed");
            // A kubelet that comes back posts its status at once.
            status_due = true;
        }
        if let Err(e) = renew_lease(&fleet, &node).await {
            tracing::warn!(node = %node.name, error = %e, "could not renew the node's Lease");
        }
        if status_due || last_status.elapsed() >= report || status_differs(&node) {
            match post_status(&fleet, &node).await {
                Ok(()) => {
                    last_status = Instant::now();
                    status_due = false;
                }
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "could not post node status")
                }
            }
        }
        // On the slot's own clock (a slow renewal must not move the node to another slot).
        let now = tokio::time::Instant::now();
        while next <= now {
            next += renew;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            r = stopped.changed() => if r.is_err() { return },
        }
    }
}

/// Whether the stored conditions say something other than what this node would report (the
/// node lifecycle controller marked it Unknown, or someone edited it).
fn status_differs(node: &SimNode) -> bool {
    let stored = lock(&node.conditions).clone();
    conditions_differ(&Condition::healthy(), stored.as_ref())
}

async fn renew_lease(fleet: &Fleet, node: &SimNode) -> Result<(), kube::Error> {
    let duration = fleet.config.lease_duration_seconds;
    fleet
        .writer
        .write("renew lease", || async {
            let mut cached = node.lease.lock().await;
            let uid = lock(&node.uid).clone();
            renew(
                &fleet.client,
                &node.name,
                uid.as_deref(),
                duration,
                now_ms(),
                &mut cached,
            )
            .await
        })
        .await
}

/// Post the node's conditions (strategic merge by type, so others' conditions stay).
pub async fn post_status(fleet: &Fleet, node: &SimNode) -> Result<(), kube::Error> {
    let api: Api<Slim<Node>> = Api::all(fleet.client.clone());
    let result = fleet
        .writer
        .write("post node status", || async {
            let previous = lock(&node.conditions).clone();
            let body: Value =
                json!({"status": {"conditions": conditions_json(&Condition::healthy(), previous.as_ref(), now_ms())}});
            api.patch_status(&node.name, &PatchParams::default(), &Patch::Strategic(body))
                .await
        })
        .await;
    match result {
        Ok(n) => {
            observe(node, &n.0);
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            tracing::warn!(node = %node.name, "the simulated Node was deleted; not recreating it");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
