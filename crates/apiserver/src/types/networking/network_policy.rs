//! NetworkPolicy (networking.k8s.io, networking.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct NetworkPolicy;

impl Strategy for NetworkPolicy {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        for dir in ["ingress", "egress"] {
            each(spec, dir, |rule| {
                each(rule, "ports", |p| default(p, "protocol", json!("TCP")))
            });
        }
        let egress = spec
            .get("egress")
            .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()));
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        default(spec, "policyTypes", types);
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (i, t) in arr(obj, "/spec/policyTypes").iter().enumerate() {
            if !t.as_str().is_some_and(|x| x == "Ingress" || x == "Egress") {
                c.unsupported(&format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]);
            }
        }
        for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
            for (i, rule) in arr(obj, &format!("/spec/{dir}")).iter().enumerate() {
                let rp = format!("spec.{dir}[{i}]");
                for (j, port) in arr(rule, "/ports").iter().enumerate() {
                    if let Some(n) = port.get("port").and_then(Value::as_i64) {
                        if !(1..=65535).contains(&n) {
                            c.invalid(
                                &format!("{rp}.ports[{j}].port"),
                                &json!(n),
                                "must be between 1 and 65535, inclusive",
                            );
                        }
                    }
                }
                for (j, peer) in arr(rule, &format!("/{peers}")).iter().enumerate() {
                    let Some(block) = peer.get("ipBlock") else {
                        continue;
                    };
                    let bp = format!("{rp}.{peers}[{j}].ipBlock");
                    let cidr = s(block, "/cidr");
                    if cidr.is_empty() {
                        c.required(&format!("{bp}.cidr"), "");
                    } else if !is_cidr(cidr) {
                        c.invalid(&format!("{bp}.cidr"), &json!(cidr), CIDR_MSG);
                    }
                    for (k, ex) in arr(block, "/except").iter().enumerate() {
                        let e = ex.as_str().unwrap_or("");
                        if !is_cidr(e) {
                            c.invalid(&format!("{bp}.except[{k}]"), ex, CIDR_MSG);
                        }
                    }
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
            ("Pod-Selector", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        out.extend([or_none(selector(o.pointer("/spec/podSelector"))), age(o)]);
        Some(out)
    }
}
