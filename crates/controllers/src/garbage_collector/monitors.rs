//! The GC's watches (upstream's monitors): discover every listable, watchable, deletable
//! resource, watch each one's metadata into the graph, and re-discover when CRDs change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::header::{HeaderValue, ACCEPT};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::graph::{Effects, Node, Uid};
use super::resources::{Res, Resources};
use super::Gc;

/// How long the first start waits for every watch's first list before the workers start.
const INITIAL_SYNC: Duration = Duration::from_secs(60);
/// CRD changes come in bursts (created, then Established): one discovery for a burst.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A task aborted when its handle is dropped (a monitor of a resource no longer served, or
/// the whole GC at the end of a leadership term).
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keep the graph fed; `synced` fires once the first lists are in (or `INITIAL_SYNC` passed).
pub async fn run(gc: Arc<Gc>, synced: oneshot::Sender<()>) {
    let mut synced = Some(synced);
    let mut monitors: HashMap<String, Task> = HashMap::new();
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let _crds = Task(tokio::spawn(watch_crds(gc.clone(), changed_tx)));
    let mut retry = Duration::from_millis(200);
    loop {
        let resources = match Resources::discover(&gc.client).await {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        retry = Duration::from_millis(200);
        gc.set_resources(resources.clone());
        let wanted: HashMap<String, Arc<Res>> = resources
            .monitored
            .iter()
            .map(|r| (r.key(), r.clone()))
            .collect();
        let gone: Vec<String> = monitors
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            monitors.remove(&k);
            // No longer served (its CRD went): whatever is left of it is gone.
            let mut fx = Effects::default();
            gc.graph().retain_resource(&k, &HashSet::new(), &mut fx);
            gc.enqueue(fx);
            tracing::debug!(resource = %k, "garbage collector: stopped watching");
        }
        let mut firsts = Vec::new();
        for (k, res) in wanted {
            if monitors.contains_key(&k) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            firsts.push(rx);
            tracing::debug!(resource = %k, "garbage collector: watching");
            monitors.insert(k, Task(tokio::spawn(monitor(gc.clone(), res, tx))));
        }
        if let Some(s) = synced.take() {
            let all = futures::future::join_all(firsts);
            if tokio::time::timeout(INITIAL_SYNC, all).await.is_err() {
                tracing::warn!(
                    "garbage collector: not every resource listed in time; starting anyway"
                );
            }
            tracing::info!(
                objects = gc.graph().len(),
                resources = monitors.len(),
                "garbage collector: graph synced"
            );
            let _ = s.send(());
        }
        if changed.recv().await.is_none() {
            return;
        }
        tokio::time::sleep(DEBOUNCE).await;
        while changed.try_recv().is_ok() {}
    }
}

/// Signal `changed` whenever a CRD is created, changed or deleted.
async fn watch_crds(gc: Arc<Gc>, changed: mpsc::Sender<()>) {
    let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(gc.client.clone());
    // kube's own watcher: a metadata-only Api asks the server for PartialObjectMetadata,
    // which the shared raw watcher would not.
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                let _ = changed.try_send(());
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "garbage collector: CRD watch error"),
        }
    }
}

/// Watch one resource's metadata into the graph. `first` fires after the first list (or
/// the first failure to list: one resource that cannot be listed must not stop the GC).
/// A client whose lists and watches ask for PartialObjectMetadata (as upstream's GC
/// metadata informers do): the server sends each object's metadata alone, spliced from the
/// stored bytes, instead of whole objects the monitor would read past — every pod and
/// Event written reaches the GC's monitors.
pub fn metadata_client(client: kube::Client) -> kube::Client {
    const LIST: HeaderValue = HeaderValue::from_static(
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    );
    const ONE: HeaderValue =
        HeaderValue::from_static("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1");
    let namespace = client.default_namespace().to_string();
    let svc = tower::service_fn(move |mut req: http::Request<kube::client::Body>| {
        let client = client.clone();
        async move {
            let watch = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
            req.headers_mut()
                .insert(ACCEPT, if watch { ONE } else { LIST });
            client.send(req).await
        }
    });
    kube::Client::new(svc, namespace)
}

async fn monitor(gc: Arc<Gc>, res: Arc<Res>, first: oneshot::Sender<()>) {
    let api = capstan_slim::WatchApi::<PartialObjectMeta<DynamicObject>>::all_with(
        gc.metadata_client.clone(),
        &res.ar,
    );
    let mut first = Some(first);
    let mut listing: Option<HashSet<Uid>> = None;
    let mut events = capstan_slim::watch(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let key = res.key();
    while let Some(ev) = events.next().await {
        let mut fx = Effects::default();
        match ev {
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                if let Some((uid, node)) = Node::from_meta(res.clone(), &o.metadata) {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(uid.clone());
                    }
                    gc.graph().upsert(uid, node, &mut fx);
                }
            }
            Ok(Event::InitDone) => {
                // A relist: what it did not list is gone.
                let seen = listing.take().unwrap_or_default();
                gc.graph().retain_resource(&key, &seen, &mut fx);
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
            }
            Ok(Event::Delete(o)) => {
                if let Some(uid) = o.metadata.uid.as_deref() {
                    gc.graph().remove(uid, &mut fx);
                }
            }
            Err(e) => {
                tracing::debug!(resource = %key, error = %e, "garbage collector: watch error");
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
            }
        }
        gc.enqueue(fx);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The monitors' client asks for PartialObjectMetadataList on a list and for
    /// PartialObjectMetadata on a watch, and what such a list holds reaches the monitor
    /// decoded (owners included).
    #[tokio::test]
    async fn monitor_requests_ask_for_metadata_only() {
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let record = seen.clone();
        let server = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let accept = req
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            record.lock().unwrap().push((query, accept));
            async move {
                let body = serde_json::json!({
                    "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": "5"},
                    "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"name": "p", "namespace": "d", "uid": "u1",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                "name": "rs", "uid": "u0"}]}}]
                });
                Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )))
            }
        });
        let client = metadata_client(kube::Client::new(server, "default"));
        let ar = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        let api =
            Api::<capstan_slim::Slim<PartialObjectMeta<DynamicObject>>>::all_with(client, &ar);
        let list = api.list(&Default::default()).await.expect("list");
        let pod = &list.items[0].0;
        assert_eq!(pod.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        // A watch request (its answer is not a watch stream here: only the header counts).
        let _ = api.watch(&Default::default(), "5").await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(!seen[0].0.contains("watch=true"));
        assert_eq!(
            seen[0].1,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        );
        assert!(seen[1].0.split('&').any(|p| p == "watch=true"), "{seen:?}");
        assert_eq!(
            seen[1].1,
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
        );
    }
}
