//! The admissionregistration.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod mutating_webhook_configuration;
pub mod validating_admission_policy;
pub mod validating_admission_policy_binding;
pub mod validating_webhook_configuration;

use crate::types::shared::validating::Causes;
use serde_json::{json, Value};

pub(crate) fn webhook_configuration_defaults(
    _group: &str,
    kind: &str,
    obj: &mut Value,
    _creating: bool,
) {
    use crate::types::shared::defaulting::*;
    let mutating = kind.starts_with("Mutating");
    each(obj, "webhooks", |w| {
        default(w, "failurePolicy", json!("Fail"));
        default(w, "matchPolicy", json!("Equivalent"));
        default(w, "namespaceSelector", json!({}));
        default(w, "objectSelector", json!({}));
        default(w, "timeoutSeconds", json!(10));
        if mutating {
            default(w, "reinvocationPolicy", json!("Never"));
        }
        each(w, "rules", |r| default(r, "scope", json!("*")));
        if let Some(svc) = w
            .pointer_mut("/clientConfig/service")
            .filter(|s| s.is_object())
        {
            default(svc, "port", json!(443));
        }
    });
}

pub(crate) fn webhook_configuration_validation(
    c: &mut Causes,
    _group: &str,
    _kind: &str,
    obj: &Value,
) {
    use crate::types::shared::validating::*;
    let mut seen = HashSet::new();
    for (i, w) in arr(obj, "/webhooks").iter().enumerate() {
        let wp = format!("webhooks[{i}]");
        let name = s(w, "/name");
        if name.split('.').count() < 3 || !is_dns1123_subdomain(name) {
            c.invalid(
                &format!("{wp}.name"),
                &json!(name),
                "should be a domain with at least three segments separated by dots",
            );
        } else if !seen.insert(name) {
            c.duplicate(&format!("{wp}.name"), &json!(name));
        }
        if w.pointer("/clientConfig/url").is_none() && w.pointer("/clientConfig/service").is_none()
        {
            c.required(
                &format!("{wp}.clientConfig"),
                "exactly one of url or service is required",
            );
        }
        if arr(w, "/admissionReviewVersions").is_empty() {
            c.required(
                &format!("{wp}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            );
        }
        c.one_of(
            w,
            "/sideEffects",
            &format!("{wp}.sideEffects"),
            &["None", "NoneOnDryRun"],
            true,
        );
        c.one_of(
            w,
            "/failurePolicy",
            &format!("{wp}.failurePolicy"),
            &["Fail", "Ignore"],
            false,
        );
        c.one_of(
            w,
            "/matchPolicy",
            &format!("{wp}.matchPolicy"),
            &["Equivalent", "Exact"],
            false,
        );
    }
}

pub(crate) fn webhook_configuration_columns() -> Option<Vec<Value>> {
    use crate::types::shared::printing::*;
    let c =
        |spec: &[(&str, &str, i64)]| Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect());
    c(&[
        ("Name", "string", 0),
        ("Webhooks", "integer", 0),
        ("Age", "string", 0),
    ])
}

pub(crate) fn webhook_configuration_cells(o: &Value, out: &mut Vec<Value>) -> Option<()> {
    use crate::types::shared::printing::*;

    out.extend([json!(arr(o, "/webhooks").len()), age(o)]);
    Some(())
}
