//! PriorityClass (scheduling.k8s.io, scheduling.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct PriorityClass;

impl Strategy for PriorityClass {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        default(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let name = s(obj, "/metadata/name");
        let value = obj.get("value").and_then(Value::as_i64);
        if value.is_none() {
            c.required("value", "");
        }
        if name.starts_with("system-")
            && !["system-cluster-critical", "system-node-critical"].contains(&name)
        {
            c.forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved",
            );
        } else if !name.starts_with("system-") && value.is_some_and(|v| v > 1_000_000_000) {
            c.forbidden(
                "value",
                "maximum allowed value of a user defined priority is 1000000000",
            );
        }
        c.one_of(
            obj,
            "/preemptionPolicy",
            "preemptionPolicy",
            &["Never", "PreemptLowerPriority"],
            false,
        );
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let immutable = |c: &mut Causes, ptr: &str, field: &str| {
            if old.pointer(ptr) != new.pointer(ptr) {
                c.invalid(
                    field,
                    new.pointer(ptr).unwrap_or(&Value::Null),
                    "field is immutable",
                );
            }
        };
        immutable(&mut c, "/value", "value");
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            ("Age", "string", 0),
            ("PreemptionPolicy", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        out.extend([
            json!(i(o, "/value")),
            json!(o
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age(o),
            json!(s(o, "/preemptionPolicy")),
        ]);
        Some(out)
    }
}
