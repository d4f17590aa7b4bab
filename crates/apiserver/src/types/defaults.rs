//! Upstream defaulting and immutability rules of the types served today (Secret
//! `stringData` and `type`, Namespace finalizers, phase and name label, immutable data).

use base64::Engine;
use rand::RngExt;
use serde_json::{json, Value};

use crate::object::{meta_mut, name};
use crate::status::Cause;
use crate::types::registry::ResourceType;

/// Five characters from upstream's alphabet (no vowels, no ambiguous digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn secret_defaults(obj: &mut Value) {
    if let Some(Value::Object(string_data)) =
        obj.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in string_data {
            let s = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
}

fn namespace_defaults(obj: &mut Value) {
    let n = name(obj).to_string();
    let m = meta_mut(obj);
    if !m.get("labels").is_some_and(Value::is_object) {
        m.insert("labels".into(), json!({}));
    }
    m["labels"]["kubernetes.io/metadata.name"] = json!(n);
}

/// Upstream makes sure the `kubernetes` finalizer is there on create.
fn namespace_finalizer(obj: &mut Value) {
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

pub fn on_create(rt: &ResourceType, obj: &mut Value) {
    if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        capstan_schema::apply_defaults(schema, obj);
    }
    if rt.is_crd() {
        crate::types::crd::apply_defaults(obj);
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => secret_defaults(obj),
        ("", "Namespace") => {
            namespace_defaults(obj);
            namespace_finalizer(obj);
            obj["status"] = json!({"phase": "Active"});
        }
        // Upstream's node strategy lets every field, status included, be set on create
        // (a node agent registers its node with its capacity and addresses at once).
        ("", "Node") => {}
        _ => {
            if rt.has_status {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    crate::types::builtin_defaults::apply(&rt.group, &rt.kind, obj, true);
    if rt.group == "batch" && rt.kind == "Job" {
        let uid = crate::object::meta_str(obj, "uid")
            .unwrap_or("")
            .to_string();
        crate::types::builtin_defaults::job_selector(obj, &uid);
    }
}

/// `subresource` is the endpoint written (`status`, `finalize`), as upstream picks the
/// update strategy by it.
pub fn on_update(rt: &ResourceType, new: &mut Value, old: &Value, subresource: Option<&str>) {
    if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        capstan_schema::apply_defaults(schema, new);
    }
    if rt.is_crd() {
        crate::types::crd::apply_defaults(new);
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => secret_defaults(new),
        ("", "Namespace") => {
            namespace_defaults(new);
            // Upstream's namespace strategies: the main endpoint keeps spec.finalizers (and
            // status), `/status` keeps the whole spec; only `/finalize` writes the spec.
            if subresource == Some("finalize") {
                // The finalize strategy keeps everything the request carries but status.
            } else {
                match old.get("spec") {
                    Some(spec) => new["spec"] = spec.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("spec");
                        }
                    }
                }
            }
        }
        _ => {}
    }
    crate::types::builtin_defaults::apply(&rt.group, &rt.kind, new, false);
}

pub fn immutable_checks(rt: &ResourceType, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if rt.custom.is_none() {
        causes.extend(crate::types::builtin_validation::validate_update(
            &rt.group, &rt.kind, old, new,
        ));
    }
    if rt.is_crd() {
        // Only the rules that compare with the stored CRD; the rest ran already.
        causes.extend(
            crate::types::crd::validate(new, Some(old))
                .into_iter()
                .filter(|c| c.field == "spec.scope" || c.field == "status.storedVersions")
                .filter(|c| c.message.contains("immutable") || c.message.contains("must appear")),
        );
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") | ("", "Secret") => {
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
            if rt.kind == "Secret" && old.get("type") != new.get("type") {
                let t = new.get("type").and_then(Value::as_str).unwrap_or("");
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "type".into(),
                    message: format!("Invalid value: {t:?}: field is immutable"),
                });
            }
        }
        _ => {}
    }
}
