//! NamespaceLifecycle admission: the system namespaces may not be deleted, and nothing is
//! created in a namespace that does not exist or is terminating.

use serde_json::json;

use crate::status::ApiError;
use crate::types::Target;

/// Namespaces upstream's NamespaceLifecycle admission never lets be deleted
/// (kube-node-lease is created at start but may be deleted, as upstream).
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// NamespaceLifecycle on delete: `namespaces "default" is forbidden: this namespace may
/// not be deleted`.
pub fn admit_delete(t: &Target, name: &str) -> Result<(), ApiError> {
    let is_namespace = t.rt.group.is_empty() && t.rt.plural == "namespaces";
    if is_namespace && t.subresource.is_none() && IMMORTAL_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        ))
        .with_details(json!({"name": name, "kind": "namespaces"})));
    }
    Ok(())
}
