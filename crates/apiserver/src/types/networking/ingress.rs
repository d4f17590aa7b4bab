//! Ingress (networking.k8s.io, networking.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Ingress;

impl Strategy for Ingress {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (i, r) in arr(obj, "/spec/rules").iter().enumerate() {
            let host = s(r, "/host");
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if !host.is_empty() && !is_dns1123_subdomain(bare) {
                c.invalid(&format!("spec.rules[{i}].host"), &json!(host), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
            }
            for (j, p) in arr(r, "/http/paths").iter().enumerate() {
                let pp = format!("spec.rules[{i}].http.paths[{j}]");
                match p.get("pathType").and_then(Value::as_str) {
                    None => c.required(&format!("{pp}.pathType"), "pathType must be specified"),
                    Some(t) if !["Exact", "Prefix", "ImplementationSpecific"].contains(&t) => c
                        .unsupported(
                            &format!("{pp}.pathType"),
                            &json!(t),
                            &["Exact", "Prefix", "ImplementationSpecific"],
                        ),
                    Some(t) if t != "ImplementationSpecific" && !s(p, "/path").starts_with('/') => {
                        c.invalid(
                            &format!("{pp}.path"),
                            &json!(s(p, "/path")),
                            "must be an absolute path",
                        )
                    }
                    _ => {}
                }
                if p.pointer("/backend/service").is_none()
                    && p.pointer("/backend/resource").is_none()
                {
                    c.required(
                        &format!("{pp}.backend"),
                        "one backend (service or resource) must be specified",
                    );
                } else if let Some(svc) = p.pointer("/backend/service") {
                    if s(svc, "/name").is_empty() {
                        c.required(&format!("{pp}.backend.service.name"), "");
                    }
                    if svc.pointer("/port/number").is_none() && svc.pointer("/port/name").is_none()
                    {
                        c.required(
                            &format!("{pp}.backend.service.port"),
                            "port name or number is required",
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
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let hosts: Vec<&str> = arr(o, "/spec/rules")
            .iter()
            .map(|r| s(r, "/host"))
            .filter(|h| !h.is_empty())
            .collect();
        let addrs: Vec<&str> = arr(o, "/status/loadBalancer/ingress")
            .iter()
            .map(|a| {
                if s(a, "/ip").is_empty() {
                    s(a, "/hostname")
                } else {
                    s(a, "/ip")
                }
            })
            .collect();
        let ports = if arr(o, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        out.extend([
            or_none(s(o, "/spec/ingressClassName").to_string()),
            json!(if hosts.is_empty() {
                "*".to_string()
            } else {
                hosts.join(",")
            }),
            json!(addrs.join(",")),
            json!(ports),
            age(o),
        ]);
        Some(out)
    }
}
