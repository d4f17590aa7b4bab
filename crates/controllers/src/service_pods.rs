//! What the Endpoints and EndpointSlice controllers share: which pods a Service selects,
//! the port a pod serves a Service port on, and which Services a pod change concerns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::cached_pod::Pod;
use crate::pods;

/// The label naming an EndpointSlice's (or Endpoints') Service, and the headless marker.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// When the change the object reflects happened (upstream's trigger-time annotation).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The selector of a Service the endpoint controllers manage; `None` for a Service they
/// leave alone (no selector: its endpoints are the user's; ExternalName: no endpoints).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's (first) IP, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<&str> {
    let s = pod.status.as_ref()?;
    s.pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .or_else(|| s.pod_ips.as_ref()?.first().map(|p| p.ip.as_str()))
}

/// Upstream's ShouldPodBeInEndpoints: an IP, not terminal, and not being deleted unless
/// terminating pods are wanted.
pub fn belongs(pod: &Pod, include_terminating: bool) -> bool {
    pod_ip(pod).is_some()
        && !pods::is_terminal(pod)
        && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The pods of the Service's namespace its selector picks, by name.
pub fn selected_pods(store: &Store<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = managed_selector(svc) else {
        return Vec::new();
    };
    let ns = svc.namespace().unwrap_or_default();
    let mut out: Vec<Arc<Pod>> = store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && selects(selector, p))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The container port a Service port reaches on `pod` (upstream's FindPort): a named
/// targetPort is looked up among the containers' ports of the same protocol.
pub fn target_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

/// The pod's hostname within the Service's DNS (only for pods whose subdomain is it).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())
        && pod.namespace() == svc.namespace())
    .then(|| host.to_string())
}

pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The latest change among the Service and its pods (creation, readiness, deletion), as
/// the trigger-time annotation reports it.
pub fn trigger_time(svc: &Service, pods: &[Arc<Pod>]) -> Option<String> {
    let mut latest: Option<Timestamp> = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for p in pods {
        let times = p
            .metadata
            .creation_timestamp
            .iter()
            .chain(p.metadata.deletion_timestamp.iter())
            .map(|t| t.0)
            .chain(
                p.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            );
        for t in times {
            if latest.is_none_or(|l| t > l) {
                latest = Some(t);
            }
        }
    }
    latest.map(|t| t.to_string())
}

/// The labels an endpoint object of `svc` carries: the Service's own, its name, and the
/// headless marker.
pub fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    l.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        l.remove(HEADLESS_LABEL);
    }
    l
}

/// Which Services last included which pods, so a pod whose labels stopped matching still
/// wakes the Services it was in.
#[derive(Default)]
pub struct Membership {
    inner: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    /// `ns/service` → pod names.
    by_service: HashMap<String, HashSet<String>>,
    /// `ns/pod` → service names.
    by_pod: HashMap<String, HashSet<String>>,
}

impl Membership {
    /// Record the pods `ns/service` now includes (none: forget it).
    pub fn set(&self, ns: &str, service: &str, pods: impl IntoIterator<Item = String>) {
        let mut ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{ns}/{service}");
        let new: HashSet<String> = pods.into_iter().collect();
        let old = ix.by_service.remove(&key).unwrap_or_default();
        for p in old.difference(&new) {
            let pk = format!("{ns}/{p}");
            if let Some(s) = ix.by_pod.get_mut(&pk) {
                s.remove(service);
                if s.is_empty() {
                    ix.by_pod.remove(&pk);
                }
            }
        }
        for p in new.difference(&old) {
            ix.by_pod
                .entry(format!("{ns}/{p}"))
                .or_default()
                .insert(service.to_string());
        }
        if !new.is_empty() {
            ix.by_service.insert(key, new);
        }
    }

    /// The Services a change of `pod` concerns: those selecting it now and those that
    /// included it last time.
    pub fn services_for(&self, services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let mut names: HashSet<String> = services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|s| managed_selector(s).is_some_and(|sel| selects(sel, pod)))
            .map(|s| s.name_any())
            .collect();
        {
            let ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = ix.by_pod.get(&format!("{ns}/{}", pod.name_any())) {
                names.extend(s.iter().cloned());
            }
        }
        names
            .into_iter()
            .map(|n| ObjectRef::new(&n).within(&ns))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn named_target_ports_resolve_by_name_and_protocol() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "ports": [{"name": "http", "containerPort": 8080},
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}}));
        let sp = |tp: serde_json::Value, proto: &str| -> ServicePort {
            serde_json::from_value(json!({"port": 80, "targetPort": tp, "protocol": proto}))
                .unwrap()
        };
        assert_eq!(target_port(&p, &sp(json!("http"), "TCP")), Some(8080));
        assert_eq!(target_port(&p, &sp(json!("http"), "UDP")), None);
        assert_eq!(target_port(&p, &sp(json!("dns"), "UDP")), Some(53));
        assert_eq!(target_port(&p, &sp(json!(9000), "TCP")), Some(9000));
        assert_eq!(target_port(&p, &sp(json!("nope"), "TCP")), None);
    }

    #[test]
    fn membership_remembers_pods_that_left() {
        let m = Membership::default();
        m.set("ns", "web", ["a".to_string(), "b".to_string()]);
        m.set("ns", "web", ["b".to_string()]);
        let ix = m.inner.lock().unwrap();
        assert!(!ix.by_pod.contains_key("ns/a"));
        assert!(ix.by_pod["ns/b"].contains("web"));
    }
}
