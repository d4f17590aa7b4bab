//! Objects every cluster has from its first start: the system namespaces, the `kubernetes`
//! Service in `default`, and the two system PriorityClasses.

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
    Ok(())
}
