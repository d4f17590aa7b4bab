//! The pod workers: one watch over the pods bound to this node; a task per pod syncs its
//! spec to the runtime (sandbox, init containers in order, sidecars, app containers, restarts
//! with back-off, termination) and writes the status it observed. At start, containers found
//! on disk are handed to their pods' workers, and those of pods that no longer exist go.

mod atomic_dir;
mod claim_volume;
mod container_spec;
mod env;
mod grpc_probe;
mod probes;
mod pull_secrets;
mod quantity;
mod resolv_conf;
mod service_account_token;
mod service_env;
mod slot;
mod source_watches;
mod status;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use capstan_events::Recorder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::AgentOptions;
use crate::images::ImageStore;
use crate::netfilter::Netfilter;
use crate::network::PodNetwork;
use crate::node::NodeHandle;
use crate::runtime::{ContainerRecord, ContainerState, Runtime};
use crate::services::ServiceCache;
use source_watches::SourceWatches;

pub use worker::{container_id, LABEL_ATTEMPT, LABEL_CONTAINER};

/// What every pod worker shares.
pub struct Shared {
    pub client: kube::Client,
    pub node: NodeHandle,
    pub images: Arc<ImageStore>,
    pub runtime: Arc<Runtime>,
    pub recorder: Recorder,
    /// The pod network (None when it could not be set up: pods then have only loopback).
    pub network: Option<Arc<PodNetwork>>,
    /// The node's packet rules (None without nftables: hostPorts cannot be honoured).
    pub netfilter: Option<Arc<Netfilter>>,
    /// Services, for the service-link env vars.
    pub services: ServiceCache,
    /// The ConfigMaps and Secrets the pods' volumes project, watched.
    pub source_watches: SourceWatches,
}

/// The node's networking parts the pod workers use.
pub struct Networking {
    pub network: Option<Arc<PodNetwork>>,
    pub netfilter: Option<Arc<Netfilter>>,
    pub services: ServiceCache,
}

struct Handle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

/// Runs until dropped.
pub async fn run(
    client: kube::Client,
    opts: AgentOptions,
    node: NodeHandle,
    images: Arc<ImageStore>,
    runtime: Arc<Runtime>,
    networking: Networking,
) {
    let Networking {
        network,
        netfilter,
        services,
    } = networking;
    let recorder = Recorder::new(client.clone(), "kubelet").with_host(opts.node_name.clone());
    let shared = Arc::new(Shared {
        client: client.clone(),
        node: node.clone(),
        images,
        runtime: runtime.clone(),
        recorder,
        network: network.clone(),
        netfilter: netfilter.clone(),
        services,
        source_watches: SourceWatches::new(client.clone()),
    });
    // What a previous agent left running, by pod uid; handed to the pods' workers.
    let mut found: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
    match runtime.list().await {
        Ok(records) => {
            for r in records {
                found.entry(r.pod_uid.clone()).or_default().push(r);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing containers left by a previous run failed"),
    }
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
    let mut events = capstan_slim::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = dispatch(&shared, &mut workers, &mut found, pod) {
                    listed.insert(uid);
                }
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch (or the agent) was down: their workers stop
                // what runs; containers of pods never seen again are removed.
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|u| !listed.contains(*u))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(w) = workers.get(&uid) {
                        let _ = w.tx.send(None);
                    }
                }
                if first_list {
                    first_list = false;
                    let orphans: Vec<(String, Vec<ContainerRecord>)> = found.drain().collect();
                    let rt = runtime.clone();
                    let net = network.clone();
                    let nf = netfilter.clone();
                    tokio::spawn(async move { remove_orphans(rt, net, nf, orphans).await });
                }
                listed.clear();
            }
            Ok(Event::Apply(pod)) => {
                dispatch(&shared, &mut workers, &mut found, pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    let _ = w.tx.send(None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying with back-off"),
        }
        workers.retain(|_, w| !w.task.is_finished());
    }
}

/// Hands the pod to its worker, starting one for a pod new to this agent.
fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Handle>,
    found: &mut HashMap<String, Vec<ContainerRecord>>,
    pod: Pod,
) -> Option<String> {
    let uid = pod.metadata.uid.clone()?;
    let pod = Arc::new(pod);
    if let Some(w) = workers.get(&uid) {
        if !w.task.is_finished() {
            let _ = w.tx.send(Some(pod));
            return Some(uid);
        }
    }
    let records = found.remove(&uid).unwrap_or_default();
    let worker = worker::Worker::new(shared.clone(), &pod, records);
    let (tx, rx) = watch::channel(Some(pod));
    let task = tokio::spawn(worker.run(rx));
    workers.insert(uid.clone(), Handle { tx, task });
    Some(uid)
}

/// Containers and sandboxes of pods that no longer exist (deleted while the agent was down).
async fn remove_orphans(
    runtime: Arc<Runtime>,
    network: Option<Arc<PodNetwork>>,
    netfilter: Option<Arc<Netfilter>>,
    orphans: Vec<(String, Vec<ContainerRecord>)>,
) {
    for (uid, records) in orphans {
        tracing::info!(pod_uid = %uid, containers = records.len(), "removing containers of a pod that no longer exists");
        for r in records {
            if !matches!(r.state, ContainerState::Exited { .. }) {
                if let Err(e) = runtime.stop(&r.id, Duration::from_secs(2)).await {
                    tracing::warn!(container = %r.id, error = %e, "stopping an orphaned container failed");
                }
            }
            if let Err(e) = runtime.remove(&r.id).await {
                tracing::warn!(container = %r.id, error = %e, "removing an orphaned container failed");
            }
        }
        if let Some(nf) = &netfilter {
            if let Err(e) = nf.remove_host_ports(&uid).await {
                tracing::warn!(pod_uid = %uid, error = %e, "removing an orphaned pod's hostPort rules failed");
            }
        }
        if let Some(net) = &network {
            if let Err(e) = net.detach(&uid).await {
                tracing::warn!(pod_uid = %uid, error = %e, "removing an orphaned pod's network failed");
            }
        }
        if let Err(e) = runtime.remove_sandbox(&uid).await {
            tracing::warn!(pod_uid = %uid, error = %e, "removing an orphaned sandbox failed");
        }
    }
}
