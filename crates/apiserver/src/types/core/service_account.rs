//! ServiceAccount (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::types::strategy::Strategy;

pub struct ServiceAccount;

impl Strategy for ServiceAccount {
    /// `serviceaccounts/token`: a TokenRequest (served by `authn::token_request`).
    fn own_subresources(&self) -> &'static [&'static str] {
        &["token"]
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
        Some(vec![name, described_col("Secrets", "integer", "", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", 0), age])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(obj));
        let age = json!(object::age(object::meta_str(obj, "creationTimestamp")));
        Some({
            vec![
                name,
                json!(obj
                    .get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.len())),
                age,
            ]
        })
    }
}
