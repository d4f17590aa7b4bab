//! The `cluster.local` zone computed at query time: a question and the watched Services and
//! EndpointSlices in, the records (or NXDOMAIN with the zone's SOA) out — no sockets here.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

/// The cluster domain (kubelet's `--cluster-domain` default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The TTL of every answer (CoreDNS's kubernetes plugin default): short, so clients see
/// endpoint changes within seconds.
pub const TTL: u32 = 5;

/// What the zone reads: the agent's watch stores, or a fixture in tests.
pub trait ClusterView {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The EndpointSlices labelled with the Service's name.
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
}

/// The zone's reply to one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Not in `cluster.local`: the host's resolvers answer.
    Forward,
    /// An authoritative answer: NOERROR (records, or none = NODATA) or NXDOMAIN; the SOA goes
    /// in the authority section when there are no answers (negative caching, RFC 2308).
    Authoritative {
        code: ResponseCode,
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
}

impl Reply {
    fn answers(answers: Vec<Record>) -> Reply {
        Reply::Authoritative {
            code: ResponseCode::NoError,
            answers,
            additionals: Vec::new(),
        }
    }

    fn nxdomain() -> Reply {
        Reply::Authoritative {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// The zone's SOA (CoreDNS's values: a 5 s negative TTL).
pub fn soa() -> Record {
    let zone = fqdn(CLUSTER_DOMAIN);
    let mname = fqdn(&format!("ns.dns.{CLUSTER_DOMAIN}"));
    let rname = fqdn(&format!("hostmaster.{CLUSTER_DOMAIN}"));
    Record::from_rdata(
        zone,
        TTL,
        RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)),
    )
}

/// Answers `qname` (any case, with or without the final dot) of type `qtype`.
pub fn lookup(view: &impl ClusterView, qname: &str, qtype: RecordType) -> Reply {
    let lower = qname.trim_end_matches('.').to_ascii_lowercase();
    let Some(relative) = strip_zone(&lower) else {
        return Reply::Forward;
    };
    let labels: Vec<&str> = if relative.is_empty() {
        Vec::new()
    } else {
        relative.split('.').collect()
    };
    // Labels are read right to left: `<…>.<ns>.svc` or `<…>.<ns>.pod`.
    match labels.as_slice() {
        [] => match qtype {
            RecordType::SOA => Reply::answers(vec![soa()]),
            _ => Reply::answers(Vec::new()),
        },
        // Empty non-terminals: they exist (NODATA), so a resolver does not stop descending.
        ["svc" | "pod"] | [_, "svc" | "pod"] => Reply::answers(Vec::new()),
        [svc, ns, "svc"] => service_name(view, ns, svc, qtype),
        [host, svc, ns, "svc"] if !host.starts_with('_') => {
            endpoint_name(view, ns, svc, host, qtype)
        }
        [port, proto, svc, ns, "svc"] => match (port.strip_prefix('_'), proto.strip_prefix('_')) {
            (Some(port), Some(proto)) => port_name(view, ns, svc, port, proto, qtype),
            _ => Reply::nxdomain(),
        },
        [dashed, _ns, "pod"] => match dashed_ip(dashed) {
            Some(ip) => Reply::answers(address_records(&lower, &[ip], qtype)),
            None => Reply::nxdomain(),
        },
        _ => Reply::nxdomain(),
    }
}

/// `qname` relative to the cluster domain (`""` for the apex), or None outside it.
fn strip_zone(qname: &str) -> Option<&str> {
    if qname == CLUSTER_DOMAIN {
        return Some("");
    }
    qname.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix('.')
}

/// `<svc>.<ns>.svc.cluster.local`.
fn service_name(view: &impl ClusterView, ns: &str, svc: &str, qtype: RecordType) -> Reply {
    let Some(service) = view.service(ns, svc) else {
        return Reply::nxdomain();
    };
    let name = service_fqdn(svc, ns);
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        let Some(target) = spec
            .external_name
            .as_deref()
            .and_then(|n| Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).ok())
        else {
            return Reply::nxdomain();
        };
        return Reply::answers(vec![Record::from_rdata(
            fqdn(&name),
            TTL,
            RData::CNAME(CNAME(target)),
        )]);
    }
    if qtype == RecordType::SRV {
        return srv_records(view, &service, ns, svc, None);
    }
    if is_headless(&service) {
        let ips: Vec<IpAddr> = ready_endpoints(view, &service, ns, svc)
            .iter()
            .flat_map(|(e, _)| e.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect::<BTreeSet<IpAddr>>()
            .into_iter()
            .collect();
        // CoreDNS: a headless Service with no ready endpoint has no name.
        if ips.is_empty() {
            return Reply::nxdomain();
        }
        return Reply::answers(address_records(&name, &ips, qtype));
    }
    Reply::answers(address_records(&name, &cluster_ips(&service), qtype))
}

/// `<hostname>.<svc>.<ns>.svc.cluster.local` (an endpoint's `hostname`, as StatefulSet pods
/// have under their governing Service) or `<dashed-ip>.<svc>…` for any ready endpoint.
fn endpoint_name(
    view: &impl ClusterView,
    ns: &str,
    svc: &str,
    host: &str,
    qtype: RecordType,
) -> Reply {
    let Some(service) = view.service(ns, svc) else {
        return Reply::nxdomain();
    };
    let dashed = dashed_ip(host);
    let ips: BTreeSet<IpAddr> = ready_endpoints(view, &service, ns, svc)
        .iter()
        .flat_map(|(e, _)| {
            let named = e.hostname.as_deref() == Some(host);
            e.addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .filter(move |ip| named || Some(*ip) == dashed)
        })
        .collect();
    if ips.is_empty() {
        return Reply::nxdomain();
    }
    let name = format!("{host}.{}", service_fqdn(svc, ns));
    let ips: Vec<IpAddr> = ips.into_iter().collect();
    Reply::answers(address_records(&name, &ips, qtype))
}

/// `_<port>._<proto>.<svc>.<ns>.svc.cluster.local`: SRV for a named port.
fn port_name(
    view: &impl ClusterView,
    ns: &str,
    svc: &str,
    port: &str,
    proto: &str,
    qtype: RecordType,
) -> Reply {
    let Some(service) = view.service(ns, svc) else {
        return Reply::nxdomain();
    };
    let reply = srv_records(view, &service, ns, svc, Some((port, proto)));
    match (qtype, reply) {
        (RecordType::SRV, reply) => reply,
        // The name exists; it just holds no record of this type.
        (
            _,
            Reply::Authoritative {
                code: ResponseCode::NoError,
                ..
            },
        ) => Reply::answers(Vec::new()),
        (_, other) => other,
    }
}

/// SRV records of the Service's named ports (only `only` when given), with the targets'
/// addresses as additionals: the Service name for a ClusterIP, each endpoint's own name for
/// a headless Service.
fn srv_records(
    view: &impl ClusterView,
    service: &Service,
    ns: &str,
    svc: &str,
    only: Option<(&str, &str)>,
) -> Reply {
    let ports: Vec<_> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            Some((name.to_ascii_lowercase(), proto, p.port))
        })
        .filter(|(name, proto, _)| only.is_none_or(|(n, p)| n == name && p == proto))
        .collect();
    if ports.is_empty() {
        return Reply::nxdomain();
    }
    let base = service_fqdn(svc, ns);
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for (port_name, proto, port) in &ports {
        let owner = fqdn(&format!("_{port_name}._{proto}.{base}"));
        if is_headless(service) {
            for (endpoint, slice) in ready_endpoints(view, service, ns, svc) {
                // The endpoint's own port number of that name (a named targetPort differs
                // per pod).
                let Some(target_port) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(port_name.as_str()))
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                    let host = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed_label(address));
                    let target = format!("{host}.{base}");
                    answers.push(srv(&owner, target_port, &target));
                    additionals.extend(address_records(&target, &[address], any_address(address)));
                }
            }
        } else if let Ok(port) = u16::try_from(*port) {
            answers.push(srv(&owner, port, &base));
            let ips = cluster_ips(service);
            for ip in &ips {
                additionals.extend(address_records(&base, &[*ip], any_address(*ip)));
            }
        }
    }
    Reply::Authoritative {
        code: ResponseCode::NoError,
        answers,
        additionals,
    }
}

fn srv(owner: &Name, port: u16, target: &str) -> Record {
    Record::from_rdata(
        owner.clone(),
        TTL,
        RData::SRV(SRV::new(0, 100, port, fqdn(target))),
    )
}

fn any_address(ip: IpAddr) -> RecordType {
    match ip {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    }
}

fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_none_or(|ip| ip == "None" || ip.is_empty())
}

fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let spec = service.spec.as_ref();
    let listed = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    let single = spec.and_then(|s| s.cluster_ip.clone());
    listed
        .iter()
        .chain(single.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<IpAddr>>()
        .into_iter()
        .collect()
}

/// The Service's endpoints that serve (ready, or any when it publishes not-ready addresses),
/// each with its slice (for the slice's ports).
fn ready_endpoints(
    view: &impl ClusterView,
    service: &Service,
    ns: &str,
    svc: &str,
) -> Vec<(Endpoint, Arc<EndpointSlice>)> {
    let publish_all = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut out = Vec::new();
    for slice in view.slices(ns, svc) {
        for endpoint in &slice.endpoints {
            // Upstream reads an unset `ready` as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if ready || publish_all {
                out.push((endpoint.clone(), slice.clone()));
            }
        }
    }
    out
}

/// A/AAAA records of `name` for the addresses of the asked family (none for other types).
fn address_records(name: &str, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    let owner = fqdn(name);
    ips.iter()
        .filter_map(|ip| match (qtype, ip) {
            (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
            (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|data| Record::from_rdata(owner.clone(), TTL, data))
        .collect()
}

fn service_fqdn(svc: &str, ns: &str) -> String {
    format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}")
}

/// `a-b-c-d` (IPv4) or the IPv6 address with `:` written as `-`.
fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn dashed_label(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// A name built from labels that were themselves read from a DNS name or a validated API
/// object; one that still fails to parse becomes the root (which never matches a question).
fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap_or_else(|_| Name::root())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fixture {
        services: HashMap<(String, String), Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
    }

    impl ClusterView for Fixture {
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
        }
        fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            .map(String::as_str)
                            == Some(service)
                })
                .cloned()
                .collect()
        }
    }

    impl Fixture {
        fn service(mut self, ns: &str, name: &str, spec: serde_json::Value) -> Self {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns}, "spec": spec
            }))
            .unwrap();
            self.services
                .insert((ns.into(), name.into()), Arc::new(svc));
            self
        }
        fn slice(mut self, ns: &str, svc: &str, body: serde_json::Value) -> Self {
            let mut v = serde_json::json!({
                "metadata": {"name": format!("{svc}-{}", self.slices.len()), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4"
            });
            for (k, val) in body.as_object().unwrap() {
                v[k] = val.clone();
            }
            self.slices
                .push(Arc::new(serde_json::from_value(v).unwrap()));
            self
        }
    }

    fn cluster() -> Fixture {
        Fixture::default()
            .service(
                "default",
                "web",
                serde_json::json!({"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            )
            .service(
                "default",
                "db",
                serde_json::json!({"clusterIP": "None",
                    "ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}),
            )
            .slice(
                "default",
                "db",
                serde_json::json!({
                    "endpoints": [
                        {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                        {"addresses": ["10.42.0.6"], "hostname": "db-1"},
                        {"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}}
                    ],
                    "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}]
                }),
            )
            .service(
                "prod",
                "ext",
                serde_json::json!({"type": "ExternalName", "externalName": "example.com"}),
            )
    }

    fn answers(reply: Reply) -> (ResponseCode, Vec<String>) {
        match reply {
            Reply::Forward => panic!("forwarded"),
            Reply::Authoritative { code, answers, .. } => (
                code,
                answers
                    .iter()
                    .map(|r| format!("{} {}", r.name, r.data))
                    .collect(),
            ),
        }
    }

    #[test]
    fn cluster_ip_service_answers_its_address_in_any_case() {
        let c = cluster();
        let (code, a) = answers(lookup(&c, "Web.Default.svc.cluster.local.", RecordType::A));
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(a, vec!["web.default.svc.cluster.local. 10.43.0.20"]);
        // IPv4-only: AAAA is NODATA, not NXDOMAIN (a resolver must not give up on the name).
        assert_eq!(
            answers(lookup(
                &c,
                "web.default.svc.cluster.local",
                RecordType::AAAA
            )),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn headless_service_answers_ready_endpoints_and_hostnames() {
        let c = cluster();
        let (code, a) = answers(lookup(&c, "db.default.svc.cluster.local", RecordType::A));
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            a,
            vec![
                "db.default.svc.cluster.local. 10.42.0.5",
                "db.default.svc.cluster.local. 10.42.0.6"
            ]
        );
        let (_, a) = answers(lookup(
            &c,
            "db-1.db.default.svc.cluster.local",
            RecordType::A,
        ));
        assert_eq!(a, vec!["db-1.db.default.svc.cluster.local. 10.42.0.6"]);
        // Not ready: no name until it is.
        let (code, _) = answers(lookup(
            &c,
            "db-2.db.default.svc.cluster.local",
            RecordType::A,
        ));
        assert_eq!(code, ResponseCode::NXDomain);
        let (_, a) = answers(lookup(
            &c,
            "10-42-0-5.db.default.svc.cluster.local",
            RecordType::A,
        ));
        assert_eq!(a, vec!["10-42-0-5.db.default.svc.cluster.local. 10.42.0.5"]);
    }

    #[test]
    fn headless_service_without_ready_endpoints_is_nxdomain() {
        let c = Fixture::default().service("a", "h", serde_json::json!({"clusterIP": "None"}));
        let (code, _) = answers(lookup(&c, "h.a.svc.cluster.local", RecordType::A));
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_for_named_ports() {
        let c = cluster();
        let (_, a) = answers(lookup(
            &c,
            "_http._tcp.web.default.svc.cluster.local",
            RecordType::SRV,
        ));
        assert_eq!(
            a,
            vec![
                "_http._tcp.web.default.svc.cluster.local. 0 100 80 web.default.svc.cluster.local."
            ]
        );
        // Headless: one per ready endpoint, at the endpoint's port, named for its hostname.
        let reply = lookup(&c, "_pg._tcp.db.default.svc.cluster.local", RecordType::SRV);
        let Reply::Authoritative { additionals, .. } = &reply else {
            panic!("forwarded")
        };
        assert_eq!(additionals.len(), 2);
        let (_, a) = answers(reply);
        assert_eq!(
            a,
            vec![
                "_pg._tcp.db.default.svc.cluster.local. 0 100 15432 db-0.db.default.svc.cluster.local.",
                "_pg._tcp.db.default.svc.cluster.local. 0 100 15432 db-1.db.default.svc.cluster.local."
            ]
        );
        let (code, _) = answers(lookup(
            &c,
            "_nope._tcp.web.default.svc.cluster.local",
            RecordType::SRV,
        ));
        assert_eq!(code, ResponseCode::NXDomain);
        let (code, _) = answers(lookup(
            &c,
            "_http._udp.web.default.svc.cluster.local",
            RecordType::SRV,
        ));
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn external_name_is_a_cname() {
        let (_, a) = answers(lookup(
            &cluster(),
            "ext.prod.svc.cluster.local",
            RecordType::A,
        ));
        assert_eq!(a, vec!["ext.prod.svc.cluster.local. example.com."]);
    }

    #[test]
    fn missing_names_in_the_zone_are_nxdomain_and_others_forwarded() {
        let c = cluster();
        for name in [
            "nope.default.svc.cluster.local",
            "web.other.svc.cluster.local",
            // What the search path makes of an already-qualified name.
            "web.default.svc.cluster.local.default.svc.cluster.local",
            "x.cluster.local",
        ] {
            let (code, a) = answers(lookup(&c, name, RecordType::A));
            assert_eq!((code, a.len()), (ResponseCode::NXDomain, 0), "{name}");
        }
        for name in [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            let (code, a) = answers(lookup(&c, name, RecordType::A));
            assert_eq!((code, a.len()), (ResponseCode::NoError, 0), "{name}");
        }
        assert_eq!(lookup(&c, "example.com.", RecordType::A), Reply::Forward);
        assert_eq!(
            lookup(&c, "notcluster.local", RecordType::A),
            Reply::Forward
        );
    }

    #[test]
    fn pod_names_echo_their_dashed_address() {
        let (_, a) = answers(lookup(
            &cluster(),
            "10-42-0-9.default.pod.cluster.local",
            RecordType::A,
        ));
        assert_eq!(a, vec!["10-42-0-9.default.pod.cluster.local. 10.42.0.9"]);
    }

    #[test]
    fn answers_follow_the_store() {
        let mut c = cluster();
        let before = answers(lookup(&c, "db.default.svc.cluster.local", RecordType::A)).1;
        c.slices.clear();
        c = c.slice(
            "default",
            "db",
            serde_json::json!({"endpoints": [{"addresses": ["10.42.0.8"]}]}),
        );
        let after = answers(lookup(&c, "db.default.svc.cluster.local", RecordType::A)).1;
        assert_ne!(before, after);
        assert_eq!(after, vec!["db.default.svc.cluster.local. 10.42.0.8"]);
    }
}
