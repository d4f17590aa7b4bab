//! ResourceQuota (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct ResourceQuota;

impl Strategy for ResourceQuota {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (k, v) in obj
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            // The decode already refused what is not a quantity.
            let Some(q) = v.as_str().and_then(quantity) else {
                c.invalid(&format!("spec.hard[{k}]"), v, QUANTITY_MSG);
                continue;
            };
            let counted = k.starts_with("count/")
                || [
                    "pods",
                    "services",
                    "replicationcontrollers",
                    "resourcequotas",
                    "secrets",
                    "configmaps",
                    "persistentvolumeclaims",
                    "services.nodeports",
                    "services.loadbalancers",
                ]
                .contains(&k.as_str());
            if q < 0.0 {
                c.invalid(
                    &format!("spec.hard[{k}]"),
                    v,
                    "must be greater than or equal to 0",
                );
            } else if counted && q.fract() != 0.0 {
                c.invalid(&format!("spec.hard[{k}]"), v, "must be an integer");
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
            ("Age", "string", 0),
            ("Request", "string", 0),
            ("Limit", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let hard = |p: &str| -> String {
            o.pointer(p)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let used = o
                                .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                                .and_then(Value::as_str)
                                .unwrap_or("0");
                            format!("{k}: {used}/{}", v.as_str().unwrap_or(""))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        out.extend([age(o), json!(hard("/spec/hard")), json!("")]);
        Some(out)
    }
}
