//! Validation at the door: object names, labels, annotations and the per-type rules of the
//! types served today, with every problem reported as a field-level cause.

use axum::http::StatusCode;
use serde_json::Value;

use crate::status::{ApiError, Cause};
use crate::types::cel_runner::{CelRunner, Overrun};
use crate::types::registry::ResourceType;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn name_errors(field: &str, name: &str, label_only: bool) -> Vec<Cause> {
    if label_only {
        if !is_dns1123_label(name) {
            let detail = if name.len() > 63 {
                "must be no more than 63 characters"
            } else {
                DNS1123_LABEL_MSG
            };
            return vec![Cause::invalid(field, name, detail)];
        }
    } else if !is_dns1123_subdomain(name) {
        let detail = if name.len() > 253 {
            "must be no more than 253 characters"
        } else {
            DNS1123_SUBDOMAIN_MSG
        };
        return vec![Cause::invalid(field, name, detail)];
    }
    vec![]
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A qualified name: `[prefix/]name`, the prefix a DNS subdomain.
pub fn qualified_name_errors(field: &str, key: &str) -> Vec<Cause> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut out = Vec::new();
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            out.push(Cause::invalid(
                field,
                key,
                &format!("prefix part {DNS1123_SUBDOMAIN_MSG}"),
            ));
        }
    }
    if !is_label_name_part(name) {
        out.push(Cause::invalid(
            field,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ));
    }
    out
}

pub fn is_label_value(v: &str) -> bool {
    label_value_ok(v)
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty() || is_label_name_part(v)
}

/// ValidateLabels: qualified keys and label values, every problem reported at `field`
/// (metadata.labels, a nodeSelector, a Service selector).
pub fn label_map_errors(field: &str, map: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (k, v) in map {
        causes.extend(qualified_name_errors(field, k));
        match v.as_str() {
            Some(s) if label_value_ok(s) => {}
            Some(s) => causes.push(Cause::invalid(
                field,
                s,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            )),
            None => causes.push(Cause::invalid(field, &v.to_string(), "must be a string")),
        }
    }
    causes
}

/// How a type's names are validated upstream (the `nameFn` its strategy passes to
/// ValidateObjectMeta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Services (`NameIsDNS1035Label`).
    Dns1035Label,
    /// Namespaces (`NameIsDNSLabel`).
    Dns1123Label,
    /// Most types (`NameIsDNSSubdomain`).
    Dns1123Subdomain,
    /// Only what every name must be to serve as one URL path segment: RBAC objects
    /// (`ValidateRBACName`, so `system:controller:foo` is a name) and
    /// CertificateSigningRequests (whose own name check accepts anything).
    PathSegment,
}

pub fn name_rule(rt: &ResourceType) -> NameRule {
    rt.strategy.name_rule()
}

/// Upstream's `path.IsValidPathSegmentName`: not `.` or `..`, no `/` or `%`. Every stored
/// name must pass it (it is checked after the type's own rule).
pub fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| name.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Validate metadata common to every type. `name` may be empty only with generateName,
/// which the caller has already resolved.
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        match name_rule(rt) {
            NameRule::Dns1035Label => {
                if !(is_dns1123_label(name) && name.as_bytes()[0].is_ascii_lowercase()) {
                    causes.push(Cause::invalid(
                        "metadata.name",
                        name,
                        crate::types::shared::validating::DNS1035_MSG,
                    ));
                }
            }
            NameRule::Dns1123Label => causes.extend(name_errors("metadata.name", name, true)),
            NameRule::Dns1123Subdomain => causes.extend(name_errors("metadata.name", name, false)),
            NameRule::PathSegment => causes.extend(
                path_segment_errors(name)
                    .iter()
                    .map(|m| Cause::invalid("metadata.name", name, m)),
            ),
        }
    }
    if let Some(labels) = meta.and_then(|m| m.get("labels")) {
        match labels.as_object() {
            Some(map) => causes.extend(label_map_errors("metadata.labels", map)),
            None if labels.is_null() => {}
            None => causes.push(Cause::invalid(
                "metadata.labels",
                &labels.to_string(),
                "must be an object of strings",
            )),
        }
    }
    if let Some(ann) = meta.and_then(|m| m.get("annotations")) {
        match ann.as_object() {
            Some(map) => {
                let mut total = 0usize;
                for (k, v) in map {
                    causes.extend(qualified_name_errors("metadata.annotations", k));
                    match v.as_str() {
                        Some(s) => total += k.len() + s.len(),
                        None => causes.push(Cause::invalid(
                            format!("metadata.annotations.{k}"),
                            &v.to_string(),
                            "must be a string",
                        )),
                    }
                }
                if total > 256 * 1024 {
                    causes.push(Cause {
                        reason: "FieldValueTooLong",
                        field: "metadata.annotations".into(),
                        message: "Too long: may not be more than 262144 bytes".into(),
                    });
                }
            }
            None if ann.is_null() => {}
            None => causes.push(Cause::invalid(
                "metadata.annotations",
                &ann.to_string(),
                "must be an object of strings",
            )),
        }
    }
    let list = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let finalizers = list("finalizers");
    for (i, f) in finalizers.iter().enumerate() {
        let name = f.as_str().unwrap_or("");
        causes.extend(qualified_name_errors(
            &format!("metadata.finalizers[{i}]"),
            name,
        ));
    }
    // The garbage collector's two finalizers ask for opposite things.
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        causes.push(Cause::invalid(
            "metadata.finalizers",
            &serde_json::to_string(&finalizers).unwrap_or_default(),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    // ValidateOwnerReferences: every reference names its owner fully.
    for r in list("ownerReferences") {
        for (key, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if r.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
                causes.push(Cause::invalid(
                    format!("metadata.ownerReferences.{key}"),
                    "",
                    &format!("{what} must not be empty"),
                ));
            }
        }
    }
    causes
}

/// A custom resource's CEL rules (`x-kubernetes-validations`); transition rules see `old`.
/// Rules that overrun the runner's deadline are one cause, as upstream's cost budget is.
pub async fn validate_rules(
    runner: &CelRunner,
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<Cause>, ApiError> {
    let Some(rules) = rt.custom.as_ref().and_then(|c| c.cel.clone()) else {
        return Ok(Vec::new());
    };
    match runner.run(rules, obj, old).await {
        Ok(found) => Ok(found
            .into_iter()
            .map(|v| Cause {
                reason: v.reason(),
                message: v.message(),
                field: v.field,
            })
            .collect()),
        Err(Overrun::Budget) => Ok(vec![Cause::invalid(
            "",
            "object",
            "validation failed due to running out of cost budget, no further validation rules will be run",
        )]),
        Err(Overrun::Busy) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many validation rules are being evaluated, please try again later",
        )
        .with_details(serde_json::json!({"retryAfterSeconds": 1}))),
    }
}

/// The kind's own rules (its strategy: a built-in kind's module, or a custom resource's
/// schema).
pub fn validate_type(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    rt.strategy.validate(obj)
}
