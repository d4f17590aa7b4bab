//! Service-link environment variables as the kubelet sets them: the `kubernetes` Service of
//! `default` always, and with `enableServiceLinks` (default true) every Service with a
//! ClusterIP in the pod's namespace — `{NAME}_SERVICE_HOST/_PORT[_<PORT NAME>]` and Docker
//! link vars `{NAME}_PORT[_<port>_<PROTO>[_PROTO|_PORT|_ADDR]]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

/// The namespace and name of the master Service, whose variables every pod gets.
const MASTER_NAMESPACE: &str = "default";
const MASTER_NAME: &str = "kubernetes";

/// The Services whose variables the pod gets, one per name (a Service of the pod's own
/// namespace wins over the master Service of the same name).
pub fn selected(
    pod: &Pod,
    own_namespace: Vec<Arc<Service>>,
    master: Option<Arc<Service>>,
) -> Vec<Arc<Service>> {
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut by_name: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    if links {
        for s in own_namespace {
            if let Some(name) = s.metadata.name.clone() {
                by_name.insert(name, s);
            }
        }
    }
    if let Some(m) = master {
        by_name.entry(MASTER_NAME.to_string()).or_insert(m);
    }
    by_name.into_values().collect()
}

/// `default/kubernetes`, the Service every pod's variables name.
pub fn master_key() -> (&'static str, &'static str) {
    (MASTER_NAMESPACE, MASTER_NAME)
}

/// The variables of these Services, in upstream's order per Service.
pub fn vars(services: &[Arc<Service>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(name), Some(spec)) = (&svc.metadata.name, &svc.spec) else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        let prefix = var_name(name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let service_port = format!("{prefix}_SERVICE_PORT");
        out.push((service_port.clone(), first.port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{service_port}_{}", var_name(port_name)),
                    p.port.to_string(),
                ));
            }
        }
        let host_port = |port: i32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{}", host_port(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
            out.push((port_prefix, url));
        }
    }
    out
}

/// Upper case, dashes to underscores (`my-svc` → `MY_SVC`).
fn var_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}
            }))
            .expect("service"),
        )
    }

    fn pod(links: Option<bool>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "enableServiceLinks": links}
        }))
        .expect("pod")
    }

    #[test]
    fn names_are_upper_case_with_underscores() {
        let svc = service(
            "ns",
            "my-web",
            "10.43.0.9",
            serde_json::json!([{"name": "http-alt", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        );
        let vars: BTreeMap<String, String> = vars(&[svc]).into_iter().collect();
        let want = [
            ("MY_WEB_SERVICE_HOST", "10.43.0.9"),
            ("MY_WEB_SERVICE_PORT", "8080"),
            ("MY_WEB_SERVICE_PORT_HTTP_ALT", "8080"),
            ("MY_WEB_SERVICE_PORT_DNS", "53"),
            ("MY_WEB_PORT", "tcp://10.43.0.9:8080"),
            ("MY_WEB_PORT_8080_TCP", "tcp://10.43.0.9:8080"),
            ("MY_WEB_PORT_8080_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_8080_TCP_PORT", "8080"),
            ("MY_WEB_PORT_8080_TCP_ADDR", "10.43.0.9"),
            ("MY_WEB_PORT_53_UDP", "udp://10.43.0.9:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.43.0.9"),
        ];
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(vars, want);
    }

    #[test]
    fn headless_services_have_none_and_the_master_service_is_always_there() {
        let master = service(
            "default",
            "kubernetes",
            "10.43.0.1",
            serde_json::json!([{"name": "https", "port": 443}]),
        );
        let headless = service("ns", "db", "None", serde_json::json!([{"port": 5432}]));
        let web = service("ns", "web", "10.43.0.7", serde_json::json!([{"port": 80}]));
        let chosen = selected(
            &pod(None),
            vec![headless, web.clone()],
            Some(master.clone()),
        );
        let names: Vec<String> = vars(&chosen).into_iter().map(|(k, _)| k).collect();
        assert!(
            names.contains(&"KUBERNETES_SERVICE_HOST".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"KUBERNETES_SERVICE_PORT_HTTPS".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"KUBERNETES_PORT_443_TCP_ADDR".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"WEB_SERVICE_HOST".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("DB_")), "{names:?}");
        let off = selected(&pod(Some(false)), vec![web], Some(master));
        let names: Vec<String> = vars(&off).into_iter().map(|(k, _)| k).collect();
        assert!(
            names.contains(&"KUBERNETES_SERVICE_HOST".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with("WEB_")), "{names:?}");
    }
}
