//! A pod's /etc/resolv.conf per its `dnsPolicy` and `dnsConfig` (the kubelet's rules): the
//! cluster DNS with the namespace's search path and `ndots:5`, the host's, or only its own.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::dns::{HostResolvConf, CLUSTER_DOMAIN};

/// The kubelet keeps at most this many nameservers (glibc reads no more).
const MAX_NAMESERVERS: usize = 3;
/// And at most this many search domains (glibc 2.26+).
const MAX_SEARCHES: usize = 32;

/// The file's text. `cluster_dns` is the kube-dns ClusterIP, None when there is none yet (the
/// kubelet then falls back to the host's configuration for ClusterFirst pods).
pub fn render(pod: &Pod, host: &HostResolvConf, cluster_dns: Option<IpAddr>) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        // A host-network pod asked for ClusterFirst resolves as its host does (upstream).
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    match (policy, cluster_first, cluster_dns) {
        ("None", _, _) => {}
        (_, true, Some(ip)) => {
            nameservers.push(ip.to_string());
            searches.extend([
                format!("{namespace}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_string(),
            ]);
            searches.extend(host.search.iter().cloned());
            options.push("ndots:5".into());
        }
        _ => {
            nameservers.extend(host.nameservers.iter().map(IpAddr::to_string));
            searches.extend(host.search.iter().cloned());
            options.extend(host.options.iter().cloned());
        }
    }
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for ns in config.nameservers.iter().flatten() {
            push_unique(&mut nameservers, ns);
        }
        for s in config.searches.iter().flatten() {
            push_unique(&mut searches, s);
        }
        for o in config.options.iter().flatten() {
            let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let option = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            // The pod's option replaces one of the same name.
            options.retain(|existing| existing.split(':').next() != Some(name));
            options.push(option);
        }
    }
    nameservers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    let mut text = String::new();
    for ns in &nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn host() -> HostResolvConf {
        HostResolvConf::parse("nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n")
    }

    fn dns() -> Option<IpAddr> {
        Some("10.43.0.10".parse().unwrap())
    }

    #[test]
    fn cluster_first_is_the_default() {
        let text = render(&pod(serde_json::json!({"containers": []})), &host(), dns());
        assert_eq!(
            text,
            "nameserver 10.43.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_use_the_cluster_only_with_host_net_policy() {
        let plain = render(
            &pod(serde_json::json!({"containers": [], "hostNetwork": true})),
            &host(),
            dns(),
        );
        assert_eq!(
            plain,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
        );
        let with = render(
            &pod(serde_json::json!({"containers": [], "hostNetwork": true,
                                    "dnsPolicy": "ClusterFirstWithHostNet"})),
            &host(),
            dns(),
        );
        assert!(with.starts_with("nameserver 10.43.0.10\n"), "{with}");
    }

    #[test]
    fn default_policy_and_no_cluster_dns_give_the_hosts() {
        let text = render(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"})),
            &host(),
            dns(),
        );
        assert_eq!(
            text,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
        );
        let text = render(&pod(serde_json::json!({"containers": []})), &host(), None);
        assert_eq!(
            text,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
        );
    }

    #[test]
    fn none_takes_only_dns_config_and_config_merges_into_others() {
        let config = serde_json::json!({
            "nameservers": ["1.2.3.4"],
            "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
        });
        let text = render(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": config})),
            &host(),
            dns(),
        );
        assert_eq!(
            text,
            "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
        );
        let text = render(
            &pod(serde_json::json!({"containers": [], "dnsConfig": config})),
            &host(),
            dns(),
        );
        assert_eq!(
            text,
            "nameserver 10.43.0.10\nnameserver 1.2.3.4\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
        );
    }
}
