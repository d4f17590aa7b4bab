//! The core API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod config_map;
pub mod endpoints;
pub mod event;
pub mod limit_range;
pub mod namespace;
pub mod node;
pub mod persistent_volume;
pub mod persistent_volume_claim;
pub mod pod;
pub mod pod_graceful_delete;
pub mod pod_references;
pub mod pod_template;
pub mod replication_controller;
pub mod resource_quota;
pub mod secret;
pub mod service;
pub mod service_account;

use serde_json::{json, Value};

/// ConfigMaps and Secrets marked `immutable` keep their data (upstream's
/// ValidateConfigMapUpdate / ValidateSecretUpdate).
pub(crate) fn immutable_data(old: &Value, new: &Value) -> Vec<crate::status::Cause> {
    use crate::status::Cause;
    let mut causes = Vec::new();
    if old.get("immutable") == Some(&json!(true)) {
        if new.get("immutable") != Some(&json!(true)) {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        for f in ["data", "binaryData"] {
            if old.get(f) != new.get(f) {
                causes.push(Cause::forbidden(
                    f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    causes
}
