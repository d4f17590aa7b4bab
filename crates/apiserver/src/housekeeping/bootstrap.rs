//! Objects every cluster has from its first start: the system namespaces, the `kubernetes`
//! Service in `default` (with Endpoints and an EndpointSlice naming this server), the
//! selector-less `kube-dns` Service in `kube-system` (each node agent adds its DNS server as an
//! endpoint), and the
//! two system PriorityClasses, and the default StorageClass `local-path` (the node agents'
//! local-path provisioner, as k3s ships it).

use serde_json::json;

use crate::housekeeping::namespaces;
use crate::rest;
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

async fn ensure(
    state: &AppState,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    obj: serde_json::Value,
) -> Result<(), ApiError> {
    let rt = state
        .registry
        .find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let t = Target {
        rt,
        namespace: ns.map(String::from),
        name: None,
        subresource: None,
        manager: None,
    };
    match rest::create_object(state, &t, obj, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create what is missing; `api_port` is the port the API server listens on.
pub async fn ensure_system_objects(state: &AppState, api_port: u16) -> Result<(), ApiError> {
    namespaces::ensure_system_namespaces(state).await?;
    let ip = state.service_ranges.first().to_string();
    ensure(
        state,
        "",
        "services",
        Some("default"),
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]}}),
    )
    .await?;
    ensure_kube_dns(state).await;
    for (name, value, desc) in [
        ("system-cluster-critical", 2_000_000_000i64, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ] {
        ensure(
            state,
            "scheduling.k8s.io",
            "priorityclasses",
            None,
            json!({"metadata": {"name": name}, "value": value, "description": desc}),
        )
        .await?;
    }
    ensure(
        state,
        "storage.k8s.io",
        "storageclasses",
        None,
        json!({"metadata": {"name": "local-path",
                            "annotations": {crate::admission::default_storage_class::IS_DEFAULT_CLASS: "true"}},
               "provisioner": LOCAL_PATH_PROVISIONER,
               "reclaimPolicy": "Delete",
               "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await?;
    Ok(())
}

/// The cluster DNS Service at the service range's tenth address, with no selector: the agents
/// write its EndpointSlices. A cluster whose tenth address is already some other Service's
/// still starts (its pods then resolve as their node does), with the reason logged.
async fn ensure_kube_dns(state: &AppState) {
    let ip = state.service_ranges.dns().to_string();
    let service = json!({
        "metadata": {"name": "kube-dns",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}});
    if let Err(e) = ensure(state, "", "services", Some("kube-system"), service).await {
        tracing::error!(cluster_ip = %ip, error = %e.message, reason = %e.reason, "creating the kube-dns Service failed: pods resolve names as their node does");
    }
}

/// The provisioner name of the agents' local-path volumes (k3s's, so manifests written for
/// k3s work unchanged).
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

/// kubeadm's discovery document: `kube-public/cluster-info` holds a kubeconfig naming this
/// server's URL and CA (no credentials), readable without any (the bootstrap policy's
/// `kubeadm:bootstrap-signer-clusterinfo` Role), so a joining node can find and pin the CA.
pub async fn ensure_cluster_info(
    state: &AppState,
    server_url: &str,
    ca_pem: &str,
) -> Result<(), ApiError> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    );
    let rt = state
        .registry
        .find("", "v1", "configmaps")
        .ok_or_else(|| ApiError::internal("configmaps are not registered"))?;
    let t = Target {
        rt: rt.clone(),
        namespace: Some(CLUSTER_INFO_NAMESPACE.into()),
        name: Some(CLUSTER_INFO.into()),
        subresource: None,
        manager: None,
    };
    match crate::storage::read(state, &rt, Some(CLUSTER_INFO_NAMESPACE), CLUSTER_INFO).await? {
        None => {
            let obj =
                json!({"metadata": {"name": CLUSTER_INFO}, "data": {"kubeconfig": kubeconfig}});
            match rest::create_object(state, &t, obj, false).await {
                Ok(_) => Ok(()),
                Err(e) if e.reason == "AlreadyExists" => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some((old, rev)) => {
            if old.pointer("/data/kubeconfig").and_then(|v| v.as_str()) == Some(kubeconfig.as_str())
            {
                return Ok(());
            }
            let mut new = old.clone();
            new["data"]["kubeconfig"] = json!(kubeconfig);
            match rest::update_object(state, &t, old, rev, new, rev, false).await {
                Ok(_) => Ok(()),
                // Another server sharing the store wrote it meanwhile (the last to start
                // names itself; upstream's lease reconciler would list every server).
                Err(e) if e.reason == "Conflict" => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// Where kubeadm keeps its discovery document.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
pub const CLUSTER_INFO: &str = "cluster-info";

/// The `kubernetes` Service's Endpoints and EndpointSlice name this server (upstream's
/// endpoint reconciler), rewritten when the address or port changed since the last start.
pub async fn ensure_api_endpoints(
    state: &AppState,
    ip: std::net::IpAddr,
    port: u16,
) -> Result<(), ApiError> {
    let ip = if ip.is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        ip
    };
    let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    let labels = json!({"endpointslice.kubernetes.io/skip-mirror": "true"});
    upsert(
        state,
        "",
        "endpoints",
        json!({"metadata": {"name": "kubernetes", "labels": labels},
               "subsets": [{"addresses": [{"ip": ip.to_string()}],
                            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
        "/subsets",
    )
    .await?;
    upsert(
        state,
        "discovery.k8s.io",
        "endpointslices",
        json!({"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
               "addressType": family,
               "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
               "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
        "/endpoints",
    )
    .await
}

/// Create `obj` in `default`, or replace the stored one when the part at `pointer` (or the
/// slice's ports) differs.
async fn upsert(
    state: &AppState,
    group: &str,
    plural: &str,
    obj: serde_json::Value,
    pointer: &str,
) -> Result<(), ApiError> {
    let rt = state
        .registry
        .find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let name = crate::object::name(&obj).to_string();
    let t = Target {
        rt: rt.clone(),
        namespace: Some("default".into()),
        name: Some(name.clone()),
        subresource: None,
        manager: None,
    };
    match crate::storage::read(state, &rt, Some("default"), &name).await? {
        None => match rest::create_object(state, &t, obj, false).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        },
        Some((old, rev)) => {
            let same = |p: &str| old.pointer(p) == obj.pointer(p);
            if same(pointer) && same("/ports") {
                return Ok(());
            }
            let mut new = old.clone();
            for key in ["subsets", "endpoints", "ports", "addressType"] {
                if let Some(v) = obj.get(key) {
                    new[key] = v.clone();
                }
            }
            match rest::update_object(state, &t, old, rev, new, rev, false).await {
                Ok(_) => Ok(()),
                // Another server sharing the store wrote it meanwhile (the last to start
                // names itself; upstream's lease reconciler would list every server).
                Err(e) if e.reason == "Conflict" => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
