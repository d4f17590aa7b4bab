//! The NamespaceLifecycle admission plugin: the system namespaces may not be deleted, and
//! nothing is created in a namespace that does not exist or is terminating.

use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::read;
use crate::types::registry::ResourceType;

/// Namespaces upstream's NamespaceLifecycle admission never lets be deleted
/// (kube-node-lease is created at start but may be deleted, as upstream).
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle;

fn is_namespaces(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        match operation {
            Operation::Create => rt.namespaced,
            Operation::Delete => is_namespaces(rt),
            Operation::Update => false,
        }
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            match attrs.operation {
                Operation::Delete => refuse_immortal(attrs),
                _ => {
                    let ns = crate::object::namespace(obj);
                    namespace_open(attrs, ns).await
                }
            }
        })
    }
}

/// `namespaces "default" is forbidden: this namespace may not be deleted`.
fn refuse_immortal(attrs: &Attributes<'_>) -> Result<(), ApiError> {
    let name = attrs.name;
    if attrs.target.subresource.is_none() && IMMORTAL_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        ))
        .with_details(json!({"name": name, "kind": "namespaces"})));
    }
    Ok(())
}

/// The namespace must exist and not be terminating before anything is created in it.
async fn namespace_open(attrs: &Attributes<'_>, ns: &str) -> Result<(), ApiError> {
    let state = attrs.state;
    let ns_rt = state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    match read(state, &ns_rt, None, ns).await? {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some((obj, _)) if obj.pointer("/metadata/deletionTimestamp").is_some() => {
            let mut e = ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ));
            e.details = Some(
                json!({"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
            );
            Err(e)
        }
        Some(_) => Ok(()),
    }
}
