//! PodDisruptionBudget (policy, policy/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct PodDisruptionBudget;

impl Strategy for PodDisruptionBudget {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if obj.pointer("/spec/minAvailable").is_some()
            && obj.pointer("/spec/maxUnavailable").is_some()
        {
            c.invalid(
                "spec",
                obj.pointer("/spec").unwrap_or(&Value::Null),
                "minAvailable and maxUnavailable cannot be both set",
            );
        }
        for f in ["minAvailable", "maxUnavailable"] {
            if let Some(v) = obj.pointer(&format!("/spec/{f}")) {
                if let Some(msg) = intstr_percent_ok(v, true) {
                    c.invalid(&format!("spec.{f}"), v, &msg);
                }
            }
        }
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let show = |p: &str| match o.pointer(p) {
            Some(Value::String(x)) => x.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "N/A".into(),
        };
        out.extend([
            json!(show("/spec/minAvailable")),
            json!(show("/spec/maxUnavailable")),
            json!(i(o, "/status/disruptionsAllowed")),
            age(o),
        ]);
        Some(out)
    }
}
