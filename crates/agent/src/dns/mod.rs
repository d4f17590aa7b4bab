//! Cluster DNS (CoreDNS's job in k3s): a DNS server on the pod bridge's gateway address, port
//! 53 UDP and TCP, answering `cluster.local` from the agent's watches and forwarding the rest.
//!
//! Each agent publishes an EndpointSlice `kube-dns-<node>` naming its own server under the
//! selector-less `kube-dns` Service the API server makes, so the Service proxy leads the
//! kube-dns ClusterIP (every pod's nameserver) to a node's server with no special case.

mod endpoint_slice;
mod forward;
mod handler;
mod host_resolv_conf;
pub mod records;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;

pub use host_resolv_conf::HostResolvConf;
pub use records::{ClusterView, Reply, CLUSTER_DOMAIN};

use crate::services::ServiceCache;

/// The Service every pod's resolv.conf names (its ClusterIP).
pub const KUBE_DNS_NAMESPACE: &str = "kube-system";
pub const KUBE_DNS_SERVICE: &str = "kube-dns";
/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The watch stores the zone is read from.
#[derive(Clone)]
pub struct StoreView {
    services: ServiceCache,
    slices: Store<EndpointSlice>,
}

impl ClusterView for StoreView {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(namespace, name)
    }

    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(service)
        })
    }
}

/// Binds the server on `gateway:53` (not every address: the host may run its own resolver on
/// port 53) and serves until the runtime stops; publishes this node's kube-dns endpoint.
pub async fn start(
    client: kube::Client,
    node_name: String,
    gateway: Ipv4Addr,
    services: ServiceCache,
) -> Result<(), DnsError> {
    let addr = SocketAddr::new(IpAddr::V4(gateway), 53);
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Listen { addr, source })?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Listen { addr, source })?;
    let host = HostResolvConf::read();
    if host.nameservers.is_empty() {
        tracing::warn!("the host's resolv.conf names no nameserver: names outside {CLUSTER_DOMAIN} get SERVFAIL");
    }
    let view = StoreView {
        services,
        slices: watch_slices(client.clone()),
    };
    let handler = handler::ClusterDnsHandler {
        view,
        upstreams: Arc::new(host.nameservers),
    };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    tracing::info!(%addr, "cluster DNS listening");
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::error!(error = %e, "cluster DNS server stopped");
        }
    });
    tokio::spawn(endpoint_slice::keep(client, node_name, gateway));
    Ok(())
}

/// A reflector over every Service's EndpointSlices; answers read it at query time.
fn watch_slices(client: kube::Client) -> Store<EndpointSlice> {
    let (store, writer) = reflector::store();
    let api: Api<EndpointSlice> = Api::all(client);
    let stream = reflector::reflector(
        writer,
        capstan_slim::watcher(api, watcher::Config::default().labels(SERVICE_NAME_LABEL))
            .default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "EndpointSlice watch for DNS failed; retrying with back-off");
            }
        }
    });
    store
}
