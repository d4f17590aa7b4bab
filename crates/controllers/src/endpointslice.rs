//! The EndpointSlice controller (upstream's pkg/controller/endpointslice): a selecting
//! Service's pods as EndpointSlices of at most `--max-endpoints-per-slice` endpoints each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::owners;
use crate::service_pods::{self as sp, Membership};

pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

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
    let controller = capstan_slim::controller(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let members = lp.members.clone();
    controller
        .watches_shared_stream(ctx.pods().subscribe(), move |pod: Arc<Pod>| {
            members.services_for(&services, &pod)
        })
        .owns_stream(capstan_slim::touched(
            Api::<EndpointSlice>::all(ctx.client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        ))
        .run(reconcile, error_policy, lp)
        .await;
}

/// A write refused because the namespace is being deleted: nothing to do there any more.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("because it is being terminated"))
}

fn error_policy(svc: Arc<Service>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(service = %key, attempts, error = %err, "syncing endpoint slices failed; retrying");
    Action::requeue(delay)
}

/// The slices' address type: the Service's first IP family (IPv4 unless it says IPv6).
fn address_type(svc: &Service) -> &'static str {
    let v6 = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .is_some_and(|f| f == "IPv6");
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// One pod as an endpoint, with the ports it serves the Service's ports on.
fn endpoint(lp: &Loop, svc: &Service, pod: &Pod, ip: &str) -> (Vec<EndpointPort>, Endpoint) {
    let publish = sp::publishes_not_ready(svc);
    let serving = publish || crate::pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let zone = node_name.as_ref().and_then(|n| {
        lp.ctx
            .nodes()
            .store
            .get(&ObjectRef::new(n))
            .and_then(|node| node.labels().get(ZONE_LABEL).cloned())
    });
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            sp::target_port(pod, p).map(|port| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    let ep = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: sp::hostname(pod, svc),
        node_name,
        target_ref: Some(sp::pod_ref(pod)),
        zone,
        ..Default::default()
    };
    (ports, ep)
}

async fn reconcile(svc: Arc<Service>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let key = format!("{ns}/{name}");
    if sp::managed_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        // No selector: the user's slices, not ours to write.
        lp.members.set(&ns, &name, []);
        return Ok(Action::await_change());
    }
    let addr_type = address_type(&svc);
    let pods = sp::selected_pods(&lp.ctx.pods().store, &svc);
    // Endpoints grouped by the ports they serve (a named port may resolve differently).
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut included = Vec::new();
    for pod in &pods {
        if !sp::belongs(pod, true) {
            continue;
        }
        let Some(ip) = sp::pod_ip(pod) else { continue };
        if (addr_type == "IPv6") != ip.contains(':') {
            continue;
        }
        let (ports, ep) = endpoint(&lp, &svc, pod, ip);
        let gk = serde_json::to_string(&ports).unwrap_or_default();
        let g = groups.entry(gk).or_insert_with(|| (ports, Vec::new()));
        g.1.push(ep);
        included.push(pod.clone());
    }
    lp.members
        .set(&ns, &name, included.iter().map(|p| p.name_any()));
    let api: Api<EndpointSlice> = Api::namespaced(lp.ctx.client.clone(), &ns);
    let listed = api
        .list(&ListParams::default().labels(&format!(
            "{}={name},{MANAGED_BY_LABEL}={MANAGED_BY}",
            sp::SERVICE_NAME_LABEL
        )))
        .await?;
    let uid = svc.uid().unwrap_or_default();
    let mut existing: Vec<EndpointSlice> = listed
        .items
        .into_iter()
        .filter(|s| owners::is_controlled_by(&s.metadata, &uid) && s.address_type == addr_type)
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // The slices we want: each port group cut into slices of at most the maximum; a
    // Service with no endpoints keeps one empty placeholder slice, as upstream.
    let max = lp.ctx.opts.max_endpoints_per_slice.max(1);
    let mut wanted: Vec<(Option<Vec<EndpointPort>>, Vec<Endpoint>)> = Vec::new();
    for (_, (ports, eps)) in groups {
        for chunk in eps.chunks(max) {
            wanted.push((Some(ports.clone()), chunk.to_vec()));
        }
    }
    if wanted.is_empty() {
        wanted.push((None, Vec::new()));
    }
    let labels = {
        let mut l = sp::labels(&svc);
        l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        l
    };
    let trigger = sp::trigger_time(&svc, &included);
    let owner = owners::controller_ref(svc.as_ref());
    // Reuse the slices there are (same ports first), create the rest, delete the leftovers.
    let mut spare = existing;
    for (ports, eps) in wanted {
        let pos = spare
            .iter()
            .position(|s| s.ports == ports)
            .or(if spare.is_empty() { None } else { Some(0) });
        match pos.map(|i| spare.remove(i)) {
            Some(mut slice) => {
                if slice.ports == ports
                    && slice.endpoints == eps
                    && slice.metadata.labels.as_ref() == Some(&labels)
                {
                    continue;
                }
                slice.ports = ports;
                slice.endpoints = eps;
                slice.metadata.labels = Some(labels.clone());
                if let Some(t) = &trigger {
                    slice
                        .annotations_mut()
                        .insert(sp::TRIGGER_TIME_ANNOTATION.into(), t.clone());
                }
                let slice_name = slice.name_any();
                api.replace(&slice_name, &PostParams::default(), &slice)
                    .await?;
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        annotations: trigger.as_ref().map(|t| {
                            BTreeMap::from([(sp::TRIGGER_TIME_ANNOTATION.to_string(), t.clone())])
                        }),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    address_type: addr_type.into(),
                    endpoints: eps,
                    ports,
                };
                match api.create(&PostParams::default(), &slice).await {
                    Ok(_) => {}
                    Err(e) if namespace_terminating(&e) => return Ok(Action::await_change()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    delete_slices(&api, &spare).await?;
    lp.backoff.reset(&key);
    tracing::debug!(service = %key, endpoints = included.len(), "endpoint slices synced");
    Ok(Action::await_change())
}

/// Delete `slices`; one already gone is no error.
pub(crate) async fn delete_slices(
    api: &Api<EndpointSlice>,
    slices: &[EndpointSlice],
) -> Result<(), kube::Error> {
    for slice in slices {
        match api
            .delete(&slice.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
