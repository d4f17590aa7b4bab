//! One watch over every bound pod (`spec.nodeName!=`), not one per node: each pod on a
//! simulated node gets a worker task, fed the pod's latest view and stopped when it is gone;
//! a worker with nothing timed ahead parks its state here until the pod changes again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fleet::Fleet;
use super::pod_view::PodView;
use super::pod_worker::{self, ParkSender, Parked, WorkerState};

/// A pod's worker: running (fed views by `tx`), or parked. Dropped, either ends: the task
/// is aborted, a parked state releases the pod's address.
enum Worker {
    Live {
        tx: watch::Sender<Arc<PodView>>,
        /// Held for its drop: the task ends with the entry.
        _task: AbortOnDrop,
    },
    Parked(Parked),
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(fleet: Arc<Fleet>) {
    let api = capstan_slim::WatchApi::<Pod>::all(fleet.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = capstan_slim::watch(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let (park, mut parked) = tokio::sync::mpsc::unbounded_channel();
    let mut resumed = fleet.take_resumed();
    loop {
        let event = tokio::select! {
            e = events.next() => match e {
                Some(e) => e,
                None => return,
            },
            Some((uid, p)) = parked.recv() => {
                take_parked(&fleet, &mut workers, &park, uid, p);
                continue;
            }
            Some(name) = recv_resumed(&mut resumed) => {
                resume(&fleet, &mut workers, &park, &name);
                continue;
            }
        };
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = dispatch(&fleet, &mut workers, &park, &pod) {
                    listed.insert(uid);
                }
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down are not in the new list.
                workers.retain(|uid, _| listed.contains(uid));
                listed.clear();
            }
            Ok(Event::Apply(pod)) => {
                dispatch(&fleet, &mut workers, &park, &pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_ref() {
                    workers.remove(uid);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying with back-off"),
        }
    }
}

async fn recv_resumed(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn(
    fleet: &Arc<Fleet>,
    node: Arc<super::fleet::SimNode>,
    park: &ParkSender,
    view: Arc<PodView>,
    state: WorkerState,
) -> Worker {
    let (tx, rx) = watch::channel(view);
    let task = tokio::spawn(pod_worker::run(
        fleet.clone(),
        node,
        rx,
        state,
        park.clone(),
    ));
    Worker::Live {
        tx,
        _task: AbortOnDrop(task),
    }
}

/// A worker parked: keep its state, unless the pod changed while it was parking (then a
/// worker starts again on the newest view).
fn take_parked(
    fleet: &Arc<Fleet>,
    workers: &mut HashMap<String, Worker>,
    park: &ParkSender,
    uid: String,
    p: Parked,
) {
    // Gone: the pod was deleted or relisted away meanwhile (dropping `p` frees its address).
    let Some((uid, w)) = workers.remove_entry(&uid) else {
        return;
    };
    let next = match w {
        Worker::Live { tx, .. } => {
            let newest = tx.borrow().clone();
            match fleet.node(&newest.node) {
                // The node resumed after the worker last saw it running: report afresh.
                Some(node) if node.resumes.load(Ordering::SeqCst) != p.resumes_seen => {
                    spawn(fleet, node.clone(), park, newest, p.state.resumed())
                }
                Some(node) if !Arc::ptr_eq(&newest, &p.view) => {
                    spawn(fleet, node.clone(), park, newest, p.state)
                }
                _ => Worker::Parked(p),
            }
        }
        // Not sent by a parked pod's worker (there is none): keep what is held.
        parked @ Worker::Parked(_) => parked,
    };
    workers.insert(uid, next);
}

/// A node resumed: its parked pods report their status afresh.
fn resume(
    fleet: &Arc<Fleet>,
    workers: &mut HashMap<String, Worker>,
    park: &ParkSender,
    name: &str,
) {
    let Some(node) = fleet.node(name) else { return };
    let on_node: Vec<String> = workers
        .iter()
        .filter(|(_, w)| matches!(w, Worker::Parked(p) if p.view.node == name))
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in on_node {
        if let Some((uid, Worker::Parked(p))) = workers.remove_entry(&uid) {
            let w = spawn(fleet, node.clone(), park, p.view, p.state.resumed());
            workers.insert(uid, w);
        }
    }
}

/// Hand the pod to its worker (starting one for a new pod); returns its uid when it is ours.
fn dispatch(
    fleet: &Arc<Fleet>,
    workers: &mut HashMap<String, Worker>,
    park: &ParkSender,
    pod: &Pod,
) -> Option<String> {
    let view = PodView::from_pod(pod)?;
    let node = fleet.node(&view.node)?.clone();
    // Most events reach a running worker: hand it the view in place.
    if let Some(Worker::Live { tx, .. }) = workers.get(&view.uid) {
        let uid = view.uid.clone();
        tx.send_if_modified(|cur| {
            let changed = **cur != view;
            if changed {
                *cur = Arc::new(view);
            }
            changed
        });
        return Some(uid);
    }
    let (uid, next) = match workers.remove_entry(&view.uid) {
        Some((uid, Worker::Parked(p))) if *p.view == view => (uid, Worker::Parked(p)),
        Some((uid, Worker::Parked(p))) => (uid, spawn(fleet, node, park, Arc::new(view), p.state)),
        // A running worker was answered above.
        Some((uid, live)) => (uid, live),
        None => (
            view.uid.clone(),
            spawn(fleet, node, park, Arc::new(view), WorkerState::default()),
        ),
    };
    workers.insert(uid.clone(), next);
    Some(uid)
}
