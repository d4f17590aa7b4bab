//! This node's endpoint of the `kube-dns` Service: the EndpointSlice `kube-dns-<node>` in
//! `kube-system` naming the node's DNS server (its bridge gateway), applied at agent start.

use std::net::Ipv4Addr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};

use super::{KUBE_DNS_NAMESPACE, KUBE_DNS_SERVICE, SERVICE_NAME_LABEL};

/// Marks the slice as the agent's, so the EndpointSlice controller leaves it alone.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "capstan-agent";
const FIELD_MANAGER: &str = "capstan-agent";

pub fn slice_name(node: &str) -> String {
    format!("{KUBE_DNS_SERVICE}-{node}")
}

/// The slice's desired state (server-side apply body).
pub fn desired(node: &str, gateway: Ipv4Addr) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(node),
            "namespace": KUBE_DNS_NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: KUBE_DNS_SERVICE, MANAGED_BY_LABEL: MANAGED_BY},
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [gateway.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    })
}

/// Applies the slice, retrying while the API says "later" (the agent may start before the
/// API server is serving).
pub async fn keep(client: kube::Client, node: String, gateway: Ipv4Addr) {
    let api: Api<EndpointSlice> = Api::namespaced(client, KUBE_DNS_NAMESPACE);
    let body = desired(&node, gateway);
    let name = slice_name(&node);
    let writer = crate::api_retry::Writer::new(1);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    match writer
        .write("kube-dns EndpointSlice", || {
            api.patch(&name, &params, &patch)
        })
        .await
    {
        Ok(_) => tracing::info!(slice = %name, %gateway, "published this node's DNS endpoint"),
        Err(e) => {
            tracing::error!(slice = %name, error = %e, "publishing this node's DNS endpoint failed: pods here cannot resolve through kube-dns")
        }
    }
}
