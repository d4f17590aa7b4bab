//! Lease (coordination.k8s.io, coordination.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Lease;

impl Strategy for Lease {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();

        let mut causes = Vec::new();
        if let Some(spec) = obj.get("spec") {
            for f in ["leaseDurationSeconds", "leaseTransitions"] {
                if let Some(v) = spec.get(f) {
                    match v.as_i64() {
                        Some(n) if n < 0 || (f == "leaseDurationSeconds" && n == 0) => {
                            causes.push(Cause::invalid(
                                format!("spec.{f}"),
                                &n.to_string(),
                                if f == "leaseDurationSeconds" {
                                    "must be greater than 0"
                                } else {
                                    "must be greater than or equal to 0"
                                },
                            ))
                        }
                        Some(_) => {}
                        None if v.is_null() => {}
                        None => causes.push(Cause::invalid(
                            format!("spec.{f}"),
                            &v.to_string(),
                            "must be an integer",
                        )),
                    }
                }
            }
        }

        c.0.extend(causes);
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
            described_col("Holder", "string", "", "The holder of the lease.", 0),
            age,
        ])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(obj));
        let age = json!(object::age(object::meta_str(obj, "creationTimestamp")));
        Some(vec![
            name,
            json!(obj
                .pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                .unwrap_or("")),
            age,
        ])
    }
}
