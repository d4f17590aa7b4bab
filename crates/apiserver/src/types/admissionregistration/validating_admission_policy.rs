//! ValidatingAdmissionPolicy (admissionregistration.k8s.io, admissionregistration.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct ValidatingAdmissionPolicy;

impl Strategy for ValidatingAdmissionPolicy {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "failurePolicy", json!("Fail"));
        // Absent constraints stay absent (validation requires them).
        if let Some(mc) = spec.get_mut("matchConstraints").filter(|m| m.is_object()) {
            default(mc, "matchPolicy", json!("Equivalent"));
            default(mc, "namespaceSelector", json!({}));
            default(mc, "objectSelector", json!({}));
            each(mc, "resourceRules", |r| default(r, "scope", json!("*")));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if obj.pointer("/spec/matchConstraints").is_none() {
            c.required("spec.matchConstraints", "");
        }
        for (i, v) in arr(obj, "/spec/validations").iter().enumerate() {
            let expr = s(v, "/expression");
            if expr.is_empty() {
                c.required(&format!("spec.validations[{i}].expression"), "");
            } else if let Some(e) = capstan_schema::cel_compile_error(expr) {
                c.invalid(
                    &format!("spec.validations[{i}].expression"),
                    &json!(expr),
                    &format!("compilation failed: {e}"),
                );
            }
        }
        c.0
    }
}
