//! The DefaultStorageClass admission plugin: a new PersistentVolumeClaim that names no class
//! (neither `spec.storageClassName` nor the beta annotation) gets the default StorageClass —
//! the newest one annotated `storageclass.kubernetes.io/is-default-class: "true"`, as upstream.

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::decode_for;
use crate::types::registry::ResourceType;
use crate::AppState;

pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

pub struct DefaultStorageClass;

impl Plugin for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation == Operation::Create
            && rt.group.is_empty()
            && rt.plural == "persistentvolumeclaims"
    }

    fn mutate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        claim: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(admit(attrs.state, claim))
    }
}

/// Whether the claim already names a class (an explicit "" counts: it asks for no class).
fn names_a_class(claim: &Value) -> bool {
    claim
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
        || claim
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(BETA_CLASS))
            .is_some()
}

async fn admit(state: &AppState, claim: &mut Value) -> Result<(), ApiError> {
    if names_a_class(claim) {
        return Ok(());
    }
    let Some(rt) = state
        .registry
        .find("storage.k8s.io", "v1", "storageclasses")
    else {
        return Ok(());
    };
    let all = state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(
            rt.key_prefix(),
        ))))
        .await?;
    let mut classes = Vec::new();
    for kv in &all.kvs {
        classes.push(decode_for(&rt, kv)?);
    }
    if let (Some(name), Some(spec)) = (
        default_class(&classes),
        claim.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        spec.insert("storageClassName".into(), json!(name));
    }
    Ok(())
}

/// The newest default class (by creation time, then name, as upstream breaks ties).
fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(IS_DEFAULT_CLASS))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let created = |c: &Value| {
                c.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let name = |c: &Value| crate::object::name(c).to_string();
            created(a)
                .cmp(&created(b))
                .then_with(|| name(b).cmp(&name(a)))
        })
        .map(|c| crate::object::name(c).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_default_class_wins() {
        let class = |name: &str, default: bool, created: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {IS_DEFAULT_CLASS: if default {"true"} else {"false"}}}})
        };
        let classes = [
            class("old", true, "2026-01-01T00:00:00Z"),
            class("new", true, "2026-02-01T00:00:00Z"),
            class("newest", false, "2026-03-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        assert_eq!(default_class(&classes[2..]), None);
    }

    #[test]
    fn an_explicit_empty_class_is_kept() {
        assert!(names_a_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(!names_a_class(&json!({"spec": {}})));
        assert!(names_a_class(
            &json!({"metadata": {"annotations": {BETA_CLASS: "x"}}, "spec": {}})
        ));
    }
}
