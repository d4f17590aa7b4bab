//! A task per pod bound to a simulated node while the pod has something ahead: it lives the
//! pod's life (`pod_state`), writes the status when it changes, and removes the pod once its
//! grace period is over. With nothing timed ahead it parks: it hands its state back to the
//! pod watch and ends, and the watch starts a task again on the pod's next change (or when
//! its node resumes). A task with its channel was ~2 KB a pod, most pods rest for good once
//! Running, and 30,000 resting tasks were 70 MB of the server.

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::fleet::{Fleet, SimNode};
use super::pod_state::PodSim;
use super::pod_status::render;
use super::pod_view::PodView;
use crate::api_retry::is_not_found;
use crate::clock::{now_ms, until, Millis};

/// Gives a pod's address back to its node when the pod is done with it, however the task
/// ends (finished, or aborted because the pod was deleted).
pub struct IpGuard {
    node: Arc<SimNode>,
    ip: Ipv4Addr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.node.release_ip(self.ip);
    }
}

/// What a pod's worker keeps between its runs.
#[derive(Default)]
pub struct WorkerState {
    sim: Option<PodSim>,
    ip_guard: Option<IpGuard>,
    /// A digest of the last status written, not the body: a rendered status as a JSON value
    /// is kilobytes, held for each of tens of thousands of pods.
    written: Option<u64>,
    reported_exit_error: bool,
}

impl WorkerState {
    /// After its node resumed: a resumed kubelet reports its pods afresh.
    pub fn resumed(mut self) -> WorkerState {
        self.written = None;
        self
    }
}

/// A worker's state handed back, with the view it last acted on (compared with the newest
/// to know whether something arrived while it was parking).
pub struct Parked {
    pub view: Arc<PodView>,
    pub state: WorkerState,
    /// `SimNode::resumes` when the worker last saw its node running.
    pub resumes_seen: u64,
}

pub type ParkSender = tokio::sync::mpsc::UnboundedSender<(String, Parked)>;

pub async fn run(
    fleet: Arc<Fleet>,
    node: Arc<SimNode>,
    mut rx: watch::Receiver<Arc<PodView>>,
    st: WorkerState,
    park: ParkSender,
) {
    let mut stopped = node.stopped.subscribe();
    let WorkerState {
        mut sim,
        mut ip_guard,
        mut written,
        mut reported_exit_error,
    } = st;
    loop {
        let view = rx.borrow_and_update().clone();
        let resumes_seen = node.resumes.load(std::sync::atomic::Ordering::SeqCst);
        if *stopped.borrow_and_update() {
            // A stopped node's kubelet is gone: nothing moves until it resumes.
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                r = stopped.changed() => if r.is_err() { return },
            }
            // A resumed kubelet reports its pods afresh.
            written = None;
            continue;
        }
        if let (Some(err), false) = (&view.exit_error, reported_exit_error) {
            tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), "{err}; the pod runs until deleted");
            reported_exit_error = true;
        }
        let now = now_ms();
        let finished_before =
            sim.is_none() && matches!(view.phase.as_deref(), Some("Succeeded") | Some("Failed"));
        let mut wake: Option<Millis> = None;
        if let Some(at) = view.deletion {
            let over =
                now >= at || finished_before || sim.as_ref().is_some_and(PodSim::is_terminal);
            if over {
                Box::pin(delete(&fleet, &view)).await;
                return;
            }
            wake = Some(at);
        }
        if !finished_before {
            if sim.is_none() {
                // After a simulator restart the pod keeps the address it has.
                let ip = match view.pod_ip {
                    Some(ip) if node.reserve_ip(ip) => Some(ip),
                    _ => node.allocate_ip(),
                };
                let Some(ip) = ip else {
                    // As a kubelet whose CNI has no address left: the pod stays Pending.
                    tracing::warn!(node = %node.name, pod = %view.name, "no free pod IP in the node's podCIDR");
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                ip_guard = Some(IpGuard {
                    node: node.clone(),
                    ip,
                });
                sim = Some(PodSim::start(&view, Some(ip), now));
            }
            if let Some(s) = sim.as_mut() {
                if let Some(next) = s.advance(&view, now) {
                    wake = Some(wake.map_or(next, |w| w.min(next)));
                }
                if s.is_terminal() {
                    // The sandbox is gone; its address may be handed out again.
                    drop(ip_guard.take());
                }
                // Serialised once: hashed to compare, and sent as it is.
                let body = render(&view, s, node.internal_ip, now).to_string();
                let digest = digest(&body);
                if written != Some(digest) {
                    // Boxed: a worker rests between writes for most of its life, and its
                    // future is as large as its largest await — inline, the request's
                    // future made every one of 30,000 idle workers ~2.3 KB.
                    match Box::pin(patch_status(&fleet, &view, &body)).await {
                        Ok(()) => written = Some(digest),
                        Err(e) if is_not_found(&e) => return,
                        Err(e) => {
                            tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), error = %e, "pod status refused");
                            written = Some(digest);
                        }
                    }
                }
            }
        }
        if wake.is_none() && !*stopped.borrow() {
            // Nothing timed ahead: only a change of the pod (or its node resuming) moves it.
            let state = WorkerState {
                sim,
                ip_guard,
                written,
                reported_exit_error,
            };
            // Err: the watch is gone, and the state with it (its address released).
            let parked = Parked {
                view,
                state,
                resumes_seen,
            };
            let _ = park.send((parked.view.uid.clone(), parked));
            return;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep(until(at, now_ms())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = stopped.changed() => if r.is_err() { return },
            _ = sleep => {}
        }
    }
}

/// A 64-bit digest of the rendered status: equal values serialise equally (serde_json's
/// maps are sorted by key here), so equal digests mean nothing new to write.
fn digest(body: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// PATCH `pods/status` with the serialised body. The patched pod the server answers with
/// is not read, so not decoded (a status is written for every pod that starts).
async fn patch_status(fleet: &Fleet, view: &PodView, body: &str) -> Result<(), kube::Error> {
    let raw = RawValue::from_string(body.to_string()).map_err(kube::Error::SerdeError)?;
    fleet
        .writer
        .write("pod status", || async {
            let req =
                kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", view.namespace))
                    .patch_subresource(
                        "status",
                        &view.name,
                        &PatchParams::default(),
                        &Patch::Strategic(&*raw),
                    )
                    .map_err(kube::Error::BuildRequest)?;
            fleet.client.request_text(req).await.map(|_| ())
        })
        .await
}

/// The kubelet's final DELETE: grace 0, only this incarnation of the name (uid precondition).
async fn delete(fleet: &Fleet, view: &PodView) {
    let api: Api<Pod> = Api::namespaced(fleet.client.clone(), &view.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(view.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let result = fleet
        .writer
        .write("delete pod", || async {
            match api.delete(&view.name, &params).await {
                Ok(_) => Ok(()),
                // Another pod now has the name: ours is already gone.
                Err(kube::Error::Api(s))
                    if s.code == 409 && s.message.contains("UID in precondition") =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
        .await;
    match result {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), error = %e, "could not delete the pod")
        }
    }
}
