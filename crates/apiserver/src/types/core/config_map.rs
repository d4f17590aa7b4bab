//! ConfigMap (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct ConfigMap;

impl Strategy for ConfigMap {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();

        let mut causes = Vec::new();
        let data = string_map(obj, "data", &mut causes);
        if let Some(Value::Object(bin)) = obj.get("binaryData") {
            for (k, v) in bin {
                causes.extend(config_key_errors("binaryData", k));
                if data.contains(k) {
                    causes.push(Cause::invalid(
                        format!("data[{k}]"),
                        k,
                        "duplicate of key present in binaryData",
                    ));
                }
                if !v.as_str().is_some_and(is_base64) {
                    causes.push(Cause::invalid(
                        format!("binaryData[{k}]"),
                        "<value>",
                        "must be base64-encoded",
                    ));
                }
            }
        }

        c.0.extend(causes);
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();

        c.0.extend(super::immutable_data(old, new));
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
                "Data",
                "integer",
                "",
                "Data contains the configuration data.",
                0,
            ),
            age,
        ])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(obj));
        let age = json!(object::age(object::meta_str(obj, "creationTimestamp")));
        Some(vec![name, json!(count(obj, &["data", "binaryData"])), age])
    }
}
