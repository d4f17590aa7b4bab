//! The kernel switches the node's rules rely on: forwarding (pods reach beyond the node,
//! hostPorts from other hosts), `route_localnet` on the bridge (DNAT to and from 127.0.0.1)
//! and bridged traffic through the ip hooks (`br_netfilter`, loaded when missing).

use std::path::Path;

/// Sets what can be set; a switch that cannot (a read-only /proc in a container) is logged,
/// since the rest still works.
pub fn prepare(bridge: &str) {
    // Pods' packets to other networks are routed by the node.
    set("/proc/sys/net/ipv4/ip_forward", "1");
    // A packet from a pod to 127.0.0.1 (the `kubernetes` Service when the API server
    // listens on loopback) and hostPort traffic from 127.0.0.1 to a pod cross the bridge
    // with a loopback address; the kernel drops those as martians unless this is on
    // (kube-proxy and the portmap plugin set the same).
    set(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    );
    // Pod-to-pod packets on one bridge skip the ip hooks unless br_netfilter sends them
    // through; Service DNAT between pods on the node needs that. Without the module the
    // file is absent and only pod-to-pod Service traffic is affected.
    // Loading it is what k3s and kubeadm's preflight do; a container without the right to
    // load modules keeps going without it.
    let bridged = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !Path::new(bridged).exists() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .output();
        if let Err(e) = &loaded {
            tracing::debug!(error = %e, "running modprobe br_netfilter failed");
        }
    }
    if Path::new(bridged).exists() {
        set(bridged, "1");
    } else {
        tracing::warn!(
            "br_netfilter is not loaded: replies between pods on the bridge bypass the nat rules, so a pod reaching another pod of this node through a Service fails"
        );
    }
}

fn set(path: &str, value: &str) {
    match std::fs::read_to_string(path) {
        Ok(current) if current.trim() == value => return,
        _ => {}
    }
    if let Err(e) = std::fs::write(path, value) {
        tracing::warn!(path, value, error = %e, "setting a sysctl failed");
    } else {
        tracing::info!(path, value, "sysctl set");
    }
}
