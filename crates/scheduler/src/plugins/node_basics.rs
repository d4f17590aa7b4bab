//! The simple per-node filters: NodeUnschedulable (cordoned nodes), NodeName (a pod that
//! names its node) and NodePorts (host port conflicts).

use k8s_openapi::api::core::v1::{Node, PodSpec, Taint};

use super::{taints, Code, Plugin, Rejection};
use crate::cache::{HostPort, NodeInfo};

pub fn node_unschedulable(spec: &PodSpec, node: &Node) -> Result<(), Rejection> {
    if !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        return Ok(());
    }
    // A pod that tolerates the unschedulable taint may land on a cordoned node.
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    if taints::tolerated(spec.tolerations.as_deref().unwrap_or(&[]), &taint) {
        return Ok(());
    }
    Err(Rejection::new(
        Plugin::NodeUnschedulable,
        Code::Unresolvable,
        "node(s) were unschedulable",
    ))
}

pub fn node_name(spec: &PodSpec, node: &Node) -> Result<(), Rejection> {
    match spec.node_name.as_deref() {
        Some(want) if !want.is_empty() && Some(want) != node.metadata.name.as_deref() => {
            Err(Rejection::new(
                Plugin::NodeName,
                Code::Unresolvable,
                "node(s) didn't match the requested node name",
            ))
        }
        _ => Ok(()),
    }
}

pub fn node_ports(wanted: &[HostPort], node: &NodeInfo) -> Result<(), Rejection> {
    if wanted
        .iter()
        .any(|w| node.used_ports.iter().any(|u| u.conflicts(w)))
    {
        return Err(Rejection::new(
            Plugin::NodePorts,
            Code::Unschedulable,
            "node(s) didn't have free ports for the requested pod ports",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache, info};
    use serde_json::json;

    #[test]
    fn cordoned_node_refuses_unless_tolerated() {
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}),
        )
        .unwrap();
        let plain: PodSpec = serde_json::from_value(json!({"containers": []})).unwrap();
        assert_eq!(
            node_unschedulable(&plain, &n).unwrap_err().reason_list(),
            vec!["node(s) were unschedulable"]
        );
        let tol: PodSpec = serde_json::from_value(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]})).unwrap();
        assert!(node_unschedulable(&tol, &n).is_ok());
        let named: PodSpec =
            serde_json::from_value(json!({"containers": [], "nodeName": "other"})).unwrap();
        assert!(node_name(&named, &n).is_err());
        assert!(node_name(&plain, &n).is_ok());
    }

    #[test]
    fn host_ports_conflict_by_ip_protocol_and_port() {
        let mut c = cache(&[("n", json!({}))]);
        let placed = info(
            json!({"metadata": {"name": "a", "uid": "a"}, "spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]}]}}),
        );
        c.assume(placed, "n");
        let n = c.node("n").unwrap();
        let want = |ip: &str, proto: &str, port| {
            vec![HostPort {
                ip: ip.into(),
                protocol: proto.into(),
                port,
            }]
        };
        assert!(node_ports(&want("0.0.0.0", "TCP", 8080), n).is_err());
        assert!(node_ports(&want("10.0.0.1", "TCP", 8080), n).is_err());
        assert!(node_ports(&want("10.0.0.2", "TCP", 8080), n).is_ok());
        assert!(node_ports(&want("10.0.0.1", "UDP", 8080), n).is_ok());
        assert!(node_ports(&want("0.0.0.0", "TCP", 8081), n).is_ok());
    }
}
