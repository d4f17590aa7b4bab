//! EndpointSlice (discovery.k8s.io, discovery.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct EndpointSlice;

impl Strategy for EndpointSlice {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        each(obj, "ports", |p| default(p, "protocol", json!("TCP")))
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        c.one_of(
            obj,
            "/addressType",
            "addressType",
            &["IPv4", "IPv6", "FQDN"],
            true,
        );
        for (i, e) in arr(obj, "/endpoints").iter().enumerate() {
            if arr(e, "/addresses").is_empty() {
                c.required(
                    &format!("endpoints[{i}].addresses"),
                    "must contain at least 1 address",
                );
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
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let ports: Vec<String> = arr(o, "/ports")
            .iter()
            .map(|p| i(p, "/port").to_string())
            .collect();
        let eps: Vec<&str> = arr(o, "/endpoints")
            .iter()
            .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
            .collect();
        out.extend([
            json!(s(o, "/addressType")),
            or_none(ports.join(",")),
            or_none(eps.join(",")),
            age(o),
        ]);
        Some(out)
    }
}
