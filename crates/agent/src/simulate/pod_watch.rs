//! One watch over every bound pod (`spec.nodeName!=`), not one per node: each pod on a
//! simulated node gets a worker task, fed the pod's latest view and stopped when it is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fleet::Fleet;
use super::pod_view::PodView;
use super::pod_worker;

struct Worker {
    tx: watch::Sender<Arc<PodView>>,
    task: JoinHandle<()>,
}

pub async fn run(fleet: Arc<Fleet>) {
    let api: Api<Pod> = Api::all(fleet.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = dispatch(&fleet, &mut workers, &pod) {
                    listed.insert(uid);
                }
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down are not in the new list.
                workers.retain(|uid, w| {
                    let keep = listed.contains(uid);
                    if !keep {
                        w.task.abort();
                    }
                    keep
                });
                listed.clear();
            }
            Ok(Event::Apply(pod)) => {
                dispatch(&fleet, &mut workers, &pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    w.task.abort();
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying with back-off"),
        }
    }
}

/// Hand the pod to its worker (starting one for a new pod); returns its uid when it is ours.
fn dispatch(
    fleet: &Arc<Fleet>,
    workers: &mut HashMap<String, Worker>,
    pod: &Pod,
) -> Option<String> {
    let view = PodView::from_pod(pod)?;
    let node = fleet.node(&view.node)?.clone();
    let uid = view.uid.clone();
    match workers.get(&uid) {
        Some(w) => {
            w.tx.send_if_modified(|cur| {
                let changed = **cur != view;
                if changed {
                    *cur = Arc::new(view);
                }
                changed
            });
        }
        None => {
            let (tx, rx) = watch::channel(Arc::new(view));
            let task = tokio::spawn(pod_worker::run(fleet.clone(), node, rx));
            workers.insert(uid.clone(), Worker { tx, task });
        }
    }
    Some(uid)
}
