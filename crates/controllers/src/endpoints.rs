//! The Endpoints controller (upstream's pkg/controller/endpoint): a selecting Service's pods
//! as its Endpoints object — ready and not-ready addresses per port set — removed with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::{Action, Controller};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::service_pods::{self as sp, Membership};

/// Addresses an Endpoints object holds at most (upstream's maxCapacity); beyond, it is
/// truncated and says so.
const MAX_CAPACITY: usize = 1000;
const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
    members: Arc<Membership>,
}

pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(60)),
        members: Arc::new(Membership::default()),
    });
    // Our own Service informer, tapped for deletions: a deleted Service's Endpoints go too.
    let (services, writer) = reflector::store();
    let client = ctx.client.clone();
    let events = reflector::reflector(
        writer,
        capstan_slim::watcher(
            Api::<Service>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .inspect(move |ev| {
        if let Ok(watcher::Event::Delete(svc)) = ev {
            let (client, svc) = (client.clone(), svc.clone());
            tokio::spawn(async move { delete_endpoints(client, &svc).await });
        }
    })
    .applied_objects();
    let members = lp.members.clone();
    let store = services.clone();
    Controller::for_stream(events, services)
        .watches_shared_stream(ctx.pods().subscribe(), move |pod: Arc<Pod>| {
            members.services_for(&store, &pod)
        })
        .run(reconcile, error_policy, lp)
        .await;
}

async fn delete_endpoints(client: kube::Client, svc: &Service) {
    let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
    if sp::managed_selector(svc).is_none() {
        return;
    }
    let api: Api<Endpoints> = Api::namespaced(client, &ns);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::debug!(namespace = %ns, service = %name, "endpoints deleted with their service")
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(namespace = %ns, service = %name, error = %e, "could not delete a deleted service's endpoints")
        }
    }
}

/// A write refused because the namespace is being deleted: nothing to do there any more.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("because it is being terminated"))
}

fn error_policy(svc: Arc<Service>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(service = %key, attempts, error = %err, "syncing endpoints failed; retrying");
    Action::requeue(delay)
}

fn address(svc: &Service, pod: &Pod, ip: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.to_string(),
        hostname: sp::hostname(pod, svc),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(sp::pod_ref(pod)),
    }
}

/// One port set's ports, ready and not-ready addresses.
type Subset = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// Upstream's RepackSubsets: one subset per distinct port set, addresses sorted by IP.
fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, Vec<Arc<Pod>>, bool) {
    let publish = sp::publishes_not_ready(svc);
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut by_ports: BTreeMap<String, Subset> = BTreeMap::new();
    let mut included = Vec::new();
    let mut count = 0usize;
    let mut truncated = false;
    for pod in pods {
        if !sp::belongs(pod, publish) {
            continue;
        }
        let Some(ip) = sp::pod_ip(pod) else { continue };
        let mut ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|p| {
                sp::target_port(pod, p).map(|port| EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        // A Service with ports none of which this pod serves gets no address from it; a
        // headless Service without ports lists the pod with no ports.
        if ports.is_empty() && !(svc_ports.is_empty() && sp::is_headless(svc)) {
            continue;
        }
        if count >= MAX_CAPACITY {
            truncated = true;
            break;
        }
        count += 1;
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = by_ports
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        let addr = address(svc, pod, ip);
        if publish || crate::pods::is_ready(pod) {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
        included.push(pod.clone());
    }
    let out = by_ports
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    (out, included, truncated)
}

async fn reconcile(svc: Arc<Service>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let key = format!("{ns}/{name}");
    if sp::managed_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        // No selector: the user's Endpoints, not ours to write.
        lp.members.set(&ns, &name, []);
        return Ok(Action::await_change());
    }
    let pods = sp::selected_pods(&lp.ctx.pods().store, &svc);
    let (subsets, included, truncated) = subsets(&svc, &pods);
    lp.members
        .set(&ns, &name, included.iter().map(|p| p.name_any()));
    let api: Api<Endpoints> = Api::namespaced(lp.ctx.client.clone(), &ns);
    let current = api.get_opt(&name).await?;
    let labels = sp::labels(&svc);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    if let Some(cur) = &current {
        let over = cur.annotations().get(OVER_CAPACITY_ANNOTATION).is_some();
        if cur.subsets == subsets
            && cur.metadata.labels.as_ref() == Some(&labels)
            && over == truncated
        {
            lp.backoff.reset(&key);
            return Ok(Action::await_change());
        }
    }
    let mut ep = current.clone().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    });
    ep.subsets = subsets;
    ep.metadata.labels = Some(labels);
    let annotations = ep.annotations_mut();
    if let Some(t) = sp::trigger_time(&svc, &included) {
        annotations.insert(sp::TRIGGER_TIME_ANNOTATION.into(), t);
    }
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    let written = if current.is_some() {
        api.replace(&name, &PostParams::default(), &ep).await
    } else {
        api.create(&PostParams::default(), &ep).await
    };
    match written {
        Ok(_) => {}
        // Our copy was stale (someone else wrote it): read it again shortly.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Ok(Action::requeue(Duration::from_millis(100)))
        }
        Err(e) if namespace_terminating(&e) => return Ok(Action::await_change()),
        Err(e) => return Err(e),
    }
    lp.backoff.reset(&key);
    tracing::debug!(service = %key, addresses = included.len(), "endpoints synced");
    Ok(Action::await_change())
}
