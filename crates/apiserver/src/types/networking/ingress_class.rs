//! IngressClass (networking.k8s.io, networking.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct IngressClass;

impl Strategy for IngressClass {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let ctl = s(obj, "/spec/controller");
        let domain_path = ctl
            .split_once('/')
            .is_some_and(|(d, rest)| is_dns1123_subdomain(d) && !rest.is_empty());
        if ctl.is_empty() {
            c.required("spec.controller", "");
        } else if !domain_path {
            c.invalid(
                "spec.controller",
                &json!(ctl),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            );
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
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let params = match o.pointer("/spec/parameters") {
            Some(p) => format!("{}/{}", s(p, "/kind"), s(p, "/name")),
            None => "<none>".into(),
        };
        out.extend([json!(s(o, "/spec/controller")), json!(params), age(o)]);
        Some(out)
    }
}
