//! CertificateSigningRequest (certificates.k8s.io, certificates.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;
use crate::types::validation::NameRule;

pub struct CertificateSigningRequest;

impl Strategy for CertificateSigningRequest {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if s(obj, "/spec/request").is_empty() {
            c.required("spec.request", "");
        }
        if s(obj, "/spec/signerName").is_empty() {
            c.required("spec.signerName", "");
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
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let conds: Vec<&str> = arr(o, "/status/conditions")
            .iter()
            .map(|c| s(c, "/type"))
            .collect();
        let cond = if conds.is_empty() {
            "Pending".to_string()
        } else {
            conds.join(",")
        };
        let dur = o
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map(|x| format!("{}m", x / 60))
            .unwrap_or_else(|| "<none>".into());
        out.extend([
            age(o),
            json!(s(o, "/spec/signerName")),
            json!(s(o, "/spec/username")),
            json!(dur),
            json!(cond),
        ]);
        Some(out)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["spec.signerName"]
    }
}
