//! The system namespaces exist from the start (bootstrap). Emptying a Terminating namespace
//! is the namespace controller's (`capstan_controllers::namespace`), as upstream.

use serde_json::json;

use crate::rest;
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespace_target(state: &AppState, name: Option<&str>) -> Result<Target, ApiError> {
    let rt = state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    Ok(Target {
        rt,
        namespace: None,
        name: name.map(String::from),
        subresource: None,
        manager: None,
    })
}

pub async fn ensure_system_namespaces(state: &AppState) -> Result<(), ApiError> {
    let t = namespace_target(state, None)?;
    for ns in SYSTEM_NAMESPACES {
        match rest::create_object(state, &t, json!({"metadata": {"name": ns}}), false).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
