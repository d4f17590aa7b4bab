//! Namespace (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::types::strategy::Strategy;
use crate::types::validation::NameRule;

pub struct Namespace;

impl Strategy for Namespace {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn own_subresources(&self) -> &'static [&'static str] {
        &["finalize"]
    }

    /// The `kubernetes` finalizer, the name label and phase Active, as upstream's strategy
    /// and defaults set them.
    fn prepare_for_create(&self, obj: &mut Value, _has_status: bool) {
        name_label(obj);
        kubernetes_finalizer(obj);
        obj["status"] = json!({"phase": "Active"});
    }

    /// Upstream's three namespace strategies: the main endpoint keeps spec and status, `/status`
    /// keeps the spec, `/finalize` keeps the status; metadata is applied as sent.
    fn prepare_for_update(
        &self,
        new: &mut Value,
        old: &Value,
        subresource: Option<&str>,
        _has_status: bool,
    ) {
        let keep: &[&str] = match subresource {
            Some("finalize") => &["status"],
            Some(_) => &["spec"],
            None => &["spec", "status"],
        };
        for part in keep {
            match old.get(*part) {
                Some(v) => new[*part] = v.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove(*part);
                    }
                }
            }
        }
        name_label(new);
    }

    /// A namespace is emptied before it goes (the namespace controller does it, then
    /// removes the `kubernetes` finalizer through `/finalize`).
    fn deletion_is_two_phase(&self) -> bool {
        true
    }

    /// A Terminating namespace goes when its `spec.finalizers` are empty too (the namespace
    /// controller removes `kubernetes` through `/finalize` once it is empty).
    fn goes_when_finalized(&self, new: &Value) -> bool {
        new.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
    }

    fn prepare_for_delete(&self, marked: &mut Value) {
        marked["status"] = json!({"phase": "Terminating"});
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = described_col(
            "Name",
            "string",
            "name",
            "Name must be unique within a namespace.",
            0,
        );
        let age = described_col("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0);
        Some(vec![
            name,
            described_col("Status", "string", "", "The status of the namespace", 0),
            age,
        ])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(obj));
        let age = json!(object::age(object::meta_str(obj, "creationTimestamp")));
        Some({
            vec![
                name,
                json!(obj
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Active")),
                age,
            ]
        })
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
}

fn name_label(obj: &mut Value) {
    let n = crate::object::name(obj).to_string();
    let m = crate::object::meta_mut(obj);
    if !m.get("labels").is_some_and(Value::is_object) {
        m.insert("labels".into(), json!({}));
    }
    m["labels"]["kubernetes.io/metadata.name"] = json!(n);
}

/// Upstream makes sure the `kubernetes` finalizer is there on create.
fn kubernetes_finalizer(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    if !obj["spec"].get("finalizers").is_some_and(Value::is_array) {
        obj["spec"]["finalizers"] = json!([]);
    }
    if let Some(list) = obj["spec"]["finalizers"].as_array_mut() {
        if !list.iter().any(|f| f == "kubernetes") {
            list.push(json!("kubernetes"));
        }
    }
}
