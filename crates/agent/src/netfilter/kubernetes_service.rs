//! Keeps the `kubernetes` Service's rule current: its ClusterIP ports (from the Service
//! cache) DNATed to the API server addresses its Endpoints name (watched), so in-cluster
//! clients reach the API from pods. Other Services come with the networking issue (19).

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::{Netfilter, Protocol, ServicePort};
use crate::services::ServiceCache;

const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

/// Runs until dropped.
pub async fn run(client: kube::Client, services: ServiceCache, netfilter: Arc<Netfilter>) {
    let api: Api<Endpoints> = Api::namespaced(client, NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut endpoints = watcher::watcher(api, config).default_backoff().boxed();
    let mut changes = services.changes();
    let mut current: Option<Endpoints> = None;
    loop {
        tokio::select! {
            event = endpoints.next() => match event {
                None => return,
                Some(Ok(Event::Apply(e) | Event::InitApply(e))) => current = Some(e),
                Some(Ok(Event::Delete(_))) => current = None,
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the kubernetes Endpoints failed; retrying with back-off");
                    continue;
                }
            },
            changed = changes.changed() => if changed.is_err() { return },
        }
        let service = services.get(NAMESPACE, NAME);
        let ports = service_ports(service.as_deref(), current.as_ref());
        if let Err(e) = netfilter.set_services(ports).await {
            tracing::error!(error = %e, "programming the kubernetes Service failed");
        }
    }
}

/// Each port of the Service with a ClusterIP, to the ready addresses of the Endpoints port
/// with the same name (or the only one).
fn service_ports(service: Option<&Service>, endpoints: Option<&Endpoints>) -> Vec<ServicePort> {
    let Some(spec) = service.and_then(|s| s.spec.as_ref()) else {
        return Vec::new();
    };
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let subsets = endpoints.and_then(|e| e.subsets.as_ref());
    spec.ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let protocol = Protocol::from_api(sp.protocol.as_deref())?;
            let port = u16::try_from(sp.port).ok()?;
            let mut backends = Vec::new();
            for subset in subsets.into_iter().flatten() {
                let ports = subset.ports.as_deref().unwrap_or_default();
                let target = ports
                    .iter()
                    .find(|p| p.name == sp.name)
                    .or(if ports.len() == 1 {
                        ports.first()
                    } else {
                        None
                    })
                    .and_then(|p| u16::try_from(p.port).ok());
                let Some(target) = target else { continue };
                for a in subset.addresses.iter().flatten() {
                    if let Ok(ip) = a.ip.parse::<Ipv4Addr>() {
                        backends.push((ip, target));
                    }
                }
            }
            backends.sort();
            backends.dedup();
            Some(ServicePort {
                name: format!(
                    "{NAMESPACE}/{NAME}:{}",
                    sp.name.as_deref().unwrap_or_default()
                ),
                cluster_ip,
                port,
                protocol,
                backends,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_port_goes_to_the_endpoints_port_of_the_same_name() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}
        }))
        .expect("service");
        let eps: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 40123}]}]
        }))
        .expect("endpoints");
        let ports = service_ports(Some(&svc), Some(&eps));
        assert_eq!(
            ports,
            vec![ServicePort {
                name: "default/kubernetes:https".into(),
                cluster_ip: Ipv4Addr::new(10, 43, 0, 1),
                port: 443,
                protocol: Protocol::Tcp,
                backends: vec![(Ipv4Addr::LOCALHOST, 40123)],
            }]
        );
        assert!(service_ports(Some(&svc), None)[0].backends.is_empty());
        assert!(service_ports(None, Some(&eps)).is_empty());
    }
}
