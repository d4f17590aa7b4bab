//! What one Service port should do on this node, read from the Service and its
//! EndpointSlices with kube-proxy's rules: which addresses lead to it, which endpoints are
//! usable (ready, else serving-and-terminating), which are local, affinity and policies.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::netfilter::Protocol;

/// kube-proxy leaves Services carrying this label to another proxy.
const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` default and bounds (upstream's).
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;
const MAX_AFFINITY_SECONDS: u32 = 86400;

/// Names one Service port: the identity its chains are named for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub protocol: Protocol,
}

impl PortKey {
    /// `namespace/name:port/proto` — for comments and logs.
    pub fn display(&self) -> String {
        format!(
            "{}/{}:{}/{}",
            self.namespace,
            self.service,
            self.port_name,
            self.protocol.keyword()
        )
    }
}

/// An endpoint's address and the port the Service port leads to on it.
pub type Backend = (Ipv4Addr, u16);

/// One Service port as the proxy programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedPort {
    pub key: PortKey,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity's timeout in seconds.
    pub affinity: Option<u32>,
    /// Usable endpoints on any node, and those on this node (sorted, no duplicates).
    pub cluster: Vec<Backend>,
    pub local: Vec<Backend>,
    /// `internalTrafficPolicy: Local` / `externalTrafficPolicy: Local`.
    pub internal_local: bool,
    pub external_local: bool,
}

impl ProxiedPort {
    /// Whether NodePort or external addresses lead here too.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// The ports of `service` to program, given its EndpointSlices (those labelled with its
/// name) and this node's name. Headless, ExternalName and other proxies' Services have none;
/// anything that cannot be expressed (IPv6, bad numbers, unknown protocols) is left out.
pub fn proxied_ports<'a>(
    service: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
    node_name: &str,
) -> Vec<ProxiedPort> {
    let meta = &service.metadata;
    let (Some(namespace), Some(name), Some(spec)) = (&meta.namespace, &meta.name, &service.spec)
    else {
        return Vec::new();
    };
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL))
        || spec.type_.as_deref() == Some("ExternalName")
    {
        return Vec::new();
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_unspecified())
    else {
        return Vec::new();
    };
    let exposes_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .chain(
            service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok()),
        )
        .filter(|ip: &Ipv4Addr| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| (1..=MAX_AFFINITY_SECONDS).contains(t))
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    spec.ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let protocol = Protocol::from_api(sp.protocol.as_deref())?;
            let port = u16::try_from(sp.port).ok().filter(|p| *p > 0)?;
            let port_name = sp.name.clone().unwrap_or_default();
            let node_port = sp
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| exposes_node_ports && *p > 0);
            let endpoints = endpoints_for(slices.clone(), &port_name, protocol, node_name);
            Some(ProxiedPort {
                key: PortKey {
                    namespace: namespace.clone(),
                    service: name.clone(),
                    port_name,
                    protocol,
                },
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                affinity,
                cluster: usable(&endpoints, |_| true),
                local: usable(&endpoints, |e| e.local),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    backend: Backend,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Every IPv4 endpoint of the slices with the port named `port_name`.
fn endpoints_for<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let target = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or_default() == port_name
                    && Protocol::from_api(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        let Some(target) = target else { continue };
        for e in &slice.endpoints {
            // Upstream reads only the first address of an endpoint.
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let c = e.conditions.as_ref();
            // nil ready/serving mean "unknown", which consumers treat as true.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            out.push(Candidate {
                backend: (ip, target),
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: e.node_name.as_deref() == Some(node_name),
            });
        }
    }
    out
}

/// The ready endpoints passing `filter`; when there are none, the serving ones that are
/// terminating (traffic drains to pods shutting down rather than failing).
fn usable(endpoints: &[Candidate], filter: impl Fn(&Candidate) -> bool) -> Vec<Backend> {
    let pick = |want: &dyn Fn(&Candidate) -> bool| {
        let mut v: Vec<Backend> = endpoints
            .iter()
            .filter(|e| filter(e) && want(e))
            .map(|e| e.backend)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let ready = pick(&|e| e.ready);
    if ready.is_empty() {
        pick(&|e| e.serving && e.terminating)
    } else {
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": spec
        }))
        .expect("service")
    }

    fn slice(endpoints: serde_json::Value, ports: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports
        }))
        .expect("slice")
    }

    #[test]
    fn ready_endpoints_by_port_name_with_the_slice_target_port() {
        let svc = service(json!({
            "type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP"}]
        }));
        let s = slice(
            json!([
                {"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.1.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.1.0.7"], "nodeName": "n2"},
                {"addresses": ["not-an-ip"]}
            ]),
            json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        );
        let ports = proxied_ports(&svc, [&s], "n1");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.key.display(), "ns/web:http/tcp");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.cluster,
            vec![
                (Ipv4Addr::new(10, 1, 0, 5), 8080),
                (Ipv4Addr::new(10, 1, 0, 7), 8080)
            ]
        );
        assert_eq!(http.local, vec![(Ipv4Addr::new(10, 1, 0, 5), 8080)]);
        assert_eq!(ports[1].cluster[0].1, 5353);
        assert_eq!(ports[1].node_port, None);
    }

    #[test]
    fn terminating_serving_endpoints_only_when_none_is_ready() {
        let svc = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let s = slice(
            json!([
                {"addresses": ["10.1.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.1.0.8"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]),
            json!([{"port": 8080}]),
        );
        let ports = proxied_ports(&svc, [&s], "n1");
        assert_eq!(ports[0].cluster, vec![(Ipv4Addr::new(10, 1, 0, 6), 8080)]);
        assert!(ports[0].local.is_empty());
    }

    #[test]
    fn headless_external_name_and_bad_values_program_nothing() {
        let headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert!(proxied_ports(&headless, [], "n").is_empty());
        let ext = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(proxied_ports(&ext, [], "n").is_empty());
        let v6 = service(json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]}));
        assert!(proxied_ports(&v6, [], "n").is_empty());
        let odd = service(json!({"clusterIP": "10.96.0.3", "ports": [
            {"port": 70000}, {"port": 80, "protocol": "ICMP"}, {"port": 81, "nodePort": 30001}
        ]}));
        let ports = proxied_ports(&odd, [], "n");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 81);
        // A ClusterIP Service's stray nodePort opens nothing.
        assert_eq!(ports[0].node_port, None);
        assert!(ports[0].cluster.is_empty());
    }

    #[test]
    fn affinity_and_policies() {
        let svc = service(json!({
            "clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.7", "bad"],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
            "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80}]
        }));
        let p = &proxied_ports(&svc, [], "n")[0];
        assert_eq!(p.affinity, Some(DEFAULT_AFFINITY_SECONDS));
        assert!(p.internal_local && p.external_local);
        assert_eq!(p.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert!(p.has_external());
    }
}
