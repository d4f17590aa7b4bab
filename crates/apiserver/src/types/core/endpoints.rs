//! Endpoints (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Endpoints;

impl Strategy for Endpoints {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        each(obj, "subsets", |s| {
            each(s, "ports", |p| default(p, "protocol", json!("TCP")))
        });
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (i, subset) in arr(obj, "/subsets").iter().enumerate() {
            for list in ["addresses", "notReadyAddresses"] {
                for (j, a) in arr(subset, &format!("/{list}")).iter().enumerate() {
                    let ip = s(a, "/ip");
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        c.invalid(
                            &format!("subsets[{i}].{list}[{j}].ip"),
                            &json!(ip),
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        );
                    }
                }
            }
            for (j, port) in arr(subset, "/ports").iter().enumerate() {
                if let Some(n) = port.get("port").and_then(Value::as_i64) {
                    if !(1..=65535).contains(&n) {
                        c.invalid(
                            &format!("subsets[{i}].ports[{j}].port"),
                            &json!(n),
                            "must be between 1 and 65535, inclusive",
                        );
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
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let mut eps = Vec::new();
        for sub in arr(o, "/subsets") {
            for a in arr(sub, "/addresses") {
                for p in arr(sub, "/ports") {
                    eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                }
            }
        }
        out.extend([or_none(eps.join(",")), age(o)]);
        Some(out)
    }
}
