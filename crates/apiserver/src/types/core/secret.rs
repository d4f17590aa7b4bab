//! Secret (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Secret;

impl Strategy for Secret {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        secret_defaults(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();

        let mut causes = Vec::new();
        if let Some(Value::Object(data)) = obj.get("data") {
            for (k, v) in data {
                causes.extend(config_key_errors("data", k));
                if !v.as_str().is_some_and(is_base64) {
                    causes.push(Cause::invalid(
                        format!("data[{k}]"),
                        "<secret contents redacted>",
                        "illegal base64 data",
                    ));
                }
            }
        }
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        let has = |k: &str| obj.get("data").and_then(|d| d.get(k)).is_some();
        match ty {
            "kubernetes.io/tls" => {
                for k in ["tls.crt", "tls.key"] {
                    if !has(k) {
                        causes.push(Cause::required(format!("data[{k}]"), ""));
                    }
                }
            }
            "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
                causes.push(Cause::required("data[.dockerconfigjson]", ""));
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                causes.push(Cause::required("data[username]", ""));
            }
            "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
                causes.push(Cause::required("data[ssh-privatekey]", ""));
            }
            _ => {}
        }

        c.0.extend(causes);
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();

        c.0.extend(super::immutable_data(old, new));
        if old.get("type") != new.get("type") {
            let t = new.get("type").and_then(Value::as_str).unwrap_or("");
            c.0.push(Cause {
                reason: "FieldValueInvalid",
                field: "type".into(),
                message: format!("Invalid value: {t:?}: field is immutable"),
            });
        }
        c.0
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
            described_col(
                "Type",
                "string",
                "",
                "Used to facilitate programmatic handling of secret data.",
                0,
            ),
            described_col("Data", "integer", "", "Data contains the secret data.", 0),
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
                json!(obj.get("type").and_then(Value::as_str).unwrap_or("Opaque")),
                json!(count(obj, &["data"])),
                age,
            ]
        })
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["type"]
    }
}

/// `stringData` folds into `data` (base64) and `type` defaults to Opaque.
fn secret_defaults(obj: &mut Value) {
    use base64::Engine;
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
