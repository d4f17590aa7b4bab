//! CertificateSigningRequest (certificates.k8s.io/v1): what each endpoint may change (main:
//! metadata; `/status`: certificate and Failed; `/approval`: Approved/Denied), validation as
//! upstream's, table columns, field selectors.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::certificates::request;
use crate::types::strategy::{reset_to_stored, Strategy};
use crate::types::validation::NameRule;

pub struct CertificateSigningRequest;

/// Condition types that, once set, stay (upstream's `Approved`, `Denied`, `Failed`).
const STICKY: &[&str] = &["Approved", "Denied", "Failed"];
/// Condition types only `/approval` writes.
const APPROVAL: &[&str] = &["Approved", "Denied"];

/// The smallest `spec.expirationSeconds` upstream accepts (10 minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn of_type<'a>(conds: &'a [Value], t: &str) -> Vec<&'a Value> {
    conds
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some(t))
        .collect()
}

/// Upstream's populateConditionTimestamps: a condition without times gets now, keeping the
/// old transition time when its status did not change.
fn stamp_conditions(new: &mut Value, old: Option<&Value>) {
    let old_conds = old.map(conditions).unwrap_or_default();
    let now = crate::object::now_rfc3339();
    let Some(list) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in list.iter_mut() {
        let Some(obj) = c.as_object_mut() else {
            continue;
        };
        if obj.get("lastUpdateTime").is_none_or(Value::is_null) {
            obj.insert("lastUpdateTime".into(), json!(now));
        }
        if obj.get("lastTransitionTime").is_none_or(Value::is_null) {
            let t = obj.get("type").cloned();
            let status = obj.get("status").cloned();
            let kept = old_conds
                .iter()
                .find(|o| o.get("type") == t.as_ref() && o.get("status") == status.as_ref())
                .and_then(|o| o.get("lastTransitionTime").cloned())
                .filter(|v| !v.is_null());
            obj.insert("lastTransitionTime".into(), kept.unwrap_or(json!(now)));
        }
    }
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if conds.is_empty() {
        if let Some(s) = obj.get_mut("status").and_then(Value::as_object_mut) {
            s.remove("conditions");
        }
    } else {
        obj["status"]["conditions"] = json!(conds);
    }
}

impl Strategy for CertificateSigningRequest {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn own_subresources(&self) -> &'static [&'static str] {
        &["approval"]
    }

    /// The requester is never what the body claims (admission's CertificateRequester sets
    /// it from the caller); status starts empty.
    fn prepare_for_create(&self, obj: &mut Value, _has_status: bool) {
        obj["status"] = json!({});
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            for field in ["username", "uid", "groups", "extra"] {
                spec.remove(field);
            }
        }
    }

    /// Upstream's three strategies: the main endpoint changes metadata only; `/status`
    /// changes status but not Approved/Denied; `/approval` changes only the conditions.
    fn prepare_for_update(
        &self,
        new: &mut Value,
        old: &Value,
        subresource: Option<&str>,
        _has_status: bool,
    ) {
        match subresource {
            Some("status") => {
                let mut status = new.get("status").cloned().unwrap_or_else(|| json!({}));
                let kept: Vec<Value> = conditions(old)
                    .into_iter()
                    .filter(|c| APPROVAL.contains(&c["type"].as_str().unwrap_or("")))
                    .collect();
                let mut conds: Vec<Value> = conditions(new)
                    .into_iter()
                    .filter(|c| !APPROVAL.contains(&c["type"].as_str().unwrap_or("")))
                    .collect();
                conds.extend(kept);
                reset_to_stored(new, old);
                if !status.is_object() {
                    status = json!({});
                }
                new["status"] = status;
                set_conditions(new, conds);
            }
            Some("approval") => {
                let conds = conditions(new);
                reset_to_stored(new, old);
                set_conditions(new, conds);
            }
            _ => {
                for part in ["spec", "status"] {
                    match old.get(part) {
                        Some(v) => new[part] = v.clone(),
                        None => {
                            if let Some(o) = new.as_object_mut() {
                                o.remove(part);
                            }
                        }
                    }
                }
            }
        }
        stamp_conditions(new, Some(old));
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let req = s(obj, "/spec/request");
        if req.is_empty() {
            c.required("spec.request", "");
        } else {
            let parsed = request::decode_field(req)
                .ok_or(request::RequestError::NotPem)
                .and_then(|pem| request::parse(&pem));
            if let Err(e) = parsed {
                c.0.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.request".into(),
                    message: format!("Invalid value: \"<request data>\": {e}"),
                });
            }
        }
        signer_name(&mut c, s(obj, "/spec/signerName"));
        let usages = arr(obj, "/spec/usages");
        if usages.is_empty() {
            c.required("spec.usages", "");
        }
        let mut seen = HashSet::new();
        for (i, u) in usages.iter().enumerate() {
            let name = u.as_str().unwrap_or("");
            if !request::KNOWN_USAGES.contains(&name) {
                c.unsupported(&format!("spec.usages[{i}]"), u, request::KNOWN_USAGES);
            } else if !seen.insert(name) {
                c.duplicate(&format!("spec.usages[{i}]"), u);
            }
        }
        if let Some(exp) = obj.pointer("/spec/expirationSeconds") {
            if exp.as_i64().is_none_or(|e| e < MIN_EXPIRATION_SECONDS) {
                c.invalid(
                    "spec.expirationSeconds",
                    exp,
                    "may not specify a duration less than 600 seconds (10 minutes)",
                );
            }
        }
        status(&mut c, obj);
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let (old_conds, new_conds) = (conditions(old), conditions(new));
        for t in STICKY {
            let (was, is) = (of_type(&old_conds, t), of_type(&new_conds, t));
            if is.len() < was.len() {
                c.forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type {t:?}"),
                );
            }
        }
        let old_cert = s(old, "/status/certificate");
        if !old_cert.is_empty() && s(new, "/status/certificate") != old_cert {
            c.forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
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
        let cond = condition_cell(o);
        let dur = o
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map(crate::object::human_seconds)
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

/// upstream's printer: Denied, else Approved, else Pending; then `,Failed` and `,Issued`.
fn condition_cell(o: &Value) -> String {
    let conds = conditions(o);
    let has = |t: &str| !of_type(&conds, t).is_empty();
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if o.pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        out.push_str(",Issued");
    }
    out
}

/// Upstream's ValidateSignerName: `<domain>/<path>`, the domain a DNS subdomain.
fn signer_name(c: &mut crate::types::shared::validating::Causes, name: &str) {
    use crate::types::shared::validating::*;
    if name.is_empty() {
        c.required("spec.signerName", "");
        return;
    }
    let v = json!(name);
    let Some((domain, path)) = name.split_once('/') else {
        c.invalid(
            "spec.signerName",
            &v,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
        return;
    };
    if path.is_empty() || path.contains('/') && path.split('/').any(str::is_empty) {
        c.invalid(
            "spec.signerName",
            &v,
            "validating path: must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
    }
    if !is_dns1123_subdomain(domain) || !domain.contains('.') {
        c.invalid(
            "spec.signerName",
            &v,
            "should be a domain with at least two segments separated by dots",
        );
    }
}

/// Conditions and certificate, as upstream's validateConditions and validateCertificate.
fn status(c: &mut crate::types::shared::validating::Causes, obj: &Value) {
    use crate::types::shared::validating::*;
    let conds = conditions(obj);
    let mut seen = HashSet::new();
    for (i, cond) in conds.iter().enumerate() {
        let t = s(cond, "/type");
        if t.is_empty() {
            c.required(&format!("status.conditions[{i}].type"), "");
            continue;
        }
        if STICKY.contains(&t) && !seen.insert(t.to_string()) {
            c.duplicate(&format!("status.conditions[{i}].type"), &json!(t));
        }
        let st = s(cond, "/status");
        if STICKY.contains(&t) && st != "True" {
            c.unsupported(
                &format!("status.conditions[{i}].status"),
                &json!(st),
                &["True"],
            );
        } else if !["True", "False", "Unknown"].contains(&st) {
            c.unsupported(
                &format!("status.conditions[{i}].status"),
                &json!(st),
                &["False", "True", "Unknown"],
            );
        }
    }
    if !of_type(&conds, "Approved").is_empty() && !of_type(&conds, "Denied").is_empty() {
        c.invalid(
            "status.conditions",
            &json!(conds),
            "Approved and Denied conditions are mutually exclusive",
        );
    }
    let cert = s(obj, "/status/certificate");
    if !cert.is_empty() {
        let ok = request::decode_field(cert).is_some_and(|pem| {
            x509_parser::pem::Pem::iter_from_buffer(&pem)
                .any(|b| b.is_ok_and(|b| b.label == "CERTIFICATE" && b.parse_x509().is_ok()))
        });
        if !ok {
            c.invalid(
                "status.certificate",
                &json!("<certificate data>"),
                "must contain at least one valid CERTIFICATE PEM block",
            );
        }
    }
}
