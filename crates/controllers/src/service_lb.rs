//! ServiceLB (k3s's `servicelb`, without its per-Service DaemonSet): a Service of type
//! LoadBalancer with no `loadBalancerClass` gets the Ready nodes' addresses as
//! `status.loadBalancer.ingress`, and every node's service proxy leads those addresses' ports to
//! the endpoints (the same path as `externalIPs`). As k3s's svclb pods claim host ports, a port
//! an older LoadBalancer Service holds leaves a newer one pending until it is free.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::WatchApi;
use capstan_slim::{Action, Controller};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::json;

use crate::backoff::Backoff;
use crate::context::Context;
use crate::events::{EventType, Recorder};
use crate::informers::Shared;

/// Upstream's label that keeps a node out of every load balancer's pool.
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

struct Loop {
    client: kube::Client,
    nodes: Store<Node>,
    services: Store<Service>,
    recorder: Recorder,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let services = Shared::<Service>::start(WatchApi::all(ctx.client.clone()));
    let nodes = ctx.nodes();
    // Every Service is looked at again when the node pool changes (not on every heartbeat)
    // or when the ports LoadBalancer Services hold change (one freed may unblock another).
    let pool = {
        let store = nodes.store.clone();
        changes_of(nodes.subscribe(), move || node_pool(&store))
    };
    let claims = {
        let store = services.store.clone();
        changes_of(services.subscribe(), move || claims(&store.state()))
    };
    let lp = Arc::new(Loop {
        client: ctx.client.clone(),
        nodes: nodes.store.clone(),
        services: services.store.clone(),
        recorder: ctx.recorder("service-lb-controller"),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    Controller::for_shared_stream(services.subscribe(), services.store.clone())
        .reconcile_all_on(futures::stream::select(pool, claims))
        .run(reconcile, error_policy, lp)
        .await;
}

/// A `()` each time `compute` (read after informer changes) gives something new. Changes
/// already waiting are taken together and `compute` (a pass over the store) runs once for
/// them: a subscription starts with every object held, and one pass each made a start
/// with N nodes cost N passes.
fn changes_of<K, T>(
    events: impl Stream<Item = Arc<K>> + Send + 'static,
    compute: impl Fn() -> T + Send + 'static,
) -> impl Stream<Item = ()> + Send + 'static
where
    T: PartialEq + Send + 'static,
{
    let mut last: Option<T> = None;
    events.ready_chunks(4096).filter_map(move |_| {
        let now = compute();
        let changed = last.as_ref() != Some(&now);
        last = Some(now);
        futures::future::ready(changed.then_some(()))
    })
}

/// Who holds which listeners: our live LoadBalancer Services, oldest first.
fn claims(all: &[Arc<Service>]) -> Vec<(AgeKey, BTreeSet<(i32, String)>)> {
    let mut out: Vec<_> = all
        .iter()
        .filter(|s| ours(s) && s.metadata.deletion_timestamp.is_none())
        .map(|s| (age_key(s), listeners(s)))
        .collect();
    out.sort();
    out
}

fn error_policy(svc: Arc<Service>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(service = %key, attempts, error = %err, "could not update the load balancer status; retrying");
    Action::requeue(delay)
}

/// The addresses a load balancer reaches: each Ready node's ExternalIP, else its InternalIP
/// (IPv4: what the service proxy programs), sorted.
fn node_pool(nodes: &Store<Node>) -> Vec<Ipv4Addr> {
    let mut pool = BTreeSet::new();
    for node in nodes.state() {
        if node.labels().contains_key(EXCLUDE_LABEL) {
            continue;
        }
        let Some(status) = node.status.as_ref() else {
            continue;
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let addresses = status.addresses.iter().flatten();
        let of_type = |t: &str| {
            addresses
                .clone()
                .filter(|a| a.type_ == t)
                .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
        };
        if let Some(ip) = of_type("ExternalIP").or_else(|| of_type("InternalIP")) {
            pool.insert(ip);
        }
    }
    pool.into_iter().collect()
}

/// Whether this loop answers for `svc`: a LoadBalancer that names no other implementation.
fn ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

/// `(port, protocol)` pairs the Service's load balancer listens on.
fn listeners(svc: &Service) -> BTreeSet<(i32, String)> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        .collect()
}

/// Older first (creation time, then namespace/name): the order k3s's svclb pods got ports in.
type AgeKey = (Option<k8s_openapi::jiff::Timestamp>, String, String);

fn age_key(svc: &Service) -> AgeKey {
    (
        svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        svc.namespace().unwrap_or_default(),
        svc.name_any(),
    )
}

/// The first listener of `svc` an older LoadBalancer Service of ours already holds.
fn port_holder(svc: &Service, all: &[Arc<Service>]) -> Option<(i32, String, String)> {
    let mine = listeners(svc);
    let my_age = age_key(svc);
    let mut holders: Vec<&Arc<Service>> = all
        .iter()
        .filter(|o| ours(o) && o.metadata.deletion_timestamp.is_none() && age_key(o) < my_age)
        .collect();
    holders.sort_by_key(|o| age_key(o));
    holders.into_iter().find_map(|other| {
        let theirs = listeners(other);
        mine.iter()
            .find(|l| theirs.contains(l))
            .map(|(port, proto)| {
                (
                    *port,
                    proto.clone(),
                    format!(
                        "{}/{}",
                        other.namespace().unwrap_or_default(),
                        other.name_any()
                    ),
                )
            })
    })
}

fn current_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

async fn reconcile(svc: Arc<Service>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let key = format!("{ns}/{name}");
    let has_ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty());
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    // Another implementation's (`loadBalancerClass`) status is not ours to touch; a Service
    // that stopped being a LoadBalancer loses what we gave it, as upstream's service
    // controller clears it.
    if (is_lb && !ours(&svc))
        || (!is_lb && !has_ingress)
        || svc.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let (want, blocked) = if !is_lb {
        (Vec::new(), None)
    } else {
        match port_holder(&svc, &lp.services.state()) {
            Some(holder) => (Vec::new(), Some(holder)),
            None => (node_pool(&lp.nodes), None),
        }
    };
    let want_ips: Vec<String> = want.iter().map(Ipv4Addr::to_string).collect();
    if current_ips(&svc) != want_ips {
        let ingress: Vec<serde_json::Value> = want_ips
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(lp.client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(verb = "patch", resource = "services", namespace = %ns, name = %name, ingress = ?want_ips, "load balancer status updated");
                if is_lb && !want_ips.is_empty() {
                    let message = format!(
                        "LoadBalancer Ingress IP addresses updated: {}",
                        want_ips.join(", ")
                    );
                    lp.recorder
                        .record(
                            svc.as_ref(),
                            EventType::Normal,
                            "UpdatedIngressIP",
                            &message,
                        )
                        .await;
                }
            }
            // Deleted meanwhile: nothing left to answer for.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e),
        }
    }
    lp.backoff.reset(&key);
    match blocked {
        Some((port, proto, holder)) => {
            let message = format!(
                "port {port}/{proto} is already used by the load balancer of Service {holder}"
            );
            lp.recorder
                .record(svc.as_ref(), EventType::Warning, "PortInUse", &message)
                .await;
            Ok(Action::await_change())
        }
        None => Ok(Action::await_change()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn only_classless_load_balancers_are_ours() {
        let lb = service(json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"}}));
        let classed = service(json!({"metadata": {"name": "b"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}));
        let plain = service(json!({"metadata": {"name": "c"}, "spec": {"type": "ClusterIP"}}));
        assert!(ours(&lb));
        assert!(!ours(&classed));
        assert!(!ours(&plain));
    }

    #[test]
    fn an_older_service_holds_a_shared_port() {
        let older = Arc::new(service(
            json!({"metadata": {"name": "old", "namespace": "a",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}}),
        ));
        let newer = service(json!({"metadata": {"name": "new", "namespace": "b",
            "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "TCP"}, {"port": 80}]}}));
        let all = vec![older.clone(), Arc::new(newer.clone())];
        assert_eq!(
            port_holder(&newer, &all),
            Some((80, "TCP".to_string(), "a/old".to_string()))
        );
        // The older one is never blocked by the newer.
        assert_eq!(port_holder(&older, &all), None);
        // 53/TCP and 53/UDP are different listeners.
        let dns = service(json!({"metadata": {"name": "dns", "namespace": "b",
            "creationTimestamp": "2026-01-03T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "TCP"}]}}));
        assert_eq!(port_holder(&dns, std::slice::from_ref(&older)), None);
    }

    #[tokio::test]
    async fn waiting_changes_cost_one_pass_and_only_news_is_told() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        let burst = futures::stream::iter((0..1000).map(|i| Arc::new(i.to_string())));
        let told: Vec<()> = changes_of(burst, move || {
            counted.fetch_add(1, Ordering::Relaxed);
            "pool"
        })
        .collect()
        .await;
        assert_eq!(passes.load(Ordering::Relaxed), 1);
        assert_eq!(told.len(), 1);
    }
}
