//! `meta.k8s.io/v1` Status: the one shape every API error takes on the wire.
//! Errors from every layer are mapped to it once, here, at the HTTP edge.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One field-level problem in a 422 (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
    pub fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("unknown field {field:?}"),
            field,
        }
    }
}

/// An API error: HTTP code, Kubernetes `reason`, a human message and optional details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }
    pub fn path_not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    /// `configmaps "foo" not found`
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {name:?} not found", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {detail}",
                qualified(group, resource)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }
    /// 422 naming every bad field: `ConfigMap "foo" is invalid: [a: ..., b: ...]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified_kind} {name:?} is invalid: {summary}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes_json}))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }
    /// What upstream's router answers for a method a path does not serve (go-restful's
    /// 405, turned into a Status with empty details).
    pub fn method_not_served() -> Self {
        ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"),
        )
    }
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// The bytes of a `Status` as kube-apiserver writes them: fields in the Go struct's order
/// (kind, apiVersion, metadata, status, message, reason, details, code), empty detail fields
/// omitted (no `"group":""` for core types), and the encoder's trailing newline. Clients
/// and conformance tests compare these bodies byte for byte.
pub fn status_body(e: &ApiError) -> Vec<u8> {
    let mut out = String::with_capacity(160 + e.message.len());
    out.push_str(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#,
    );
    out.push_str(&Value::from(e.message.as_str()).to_string());
    out.push_str(r#","reason":"#);
    out.push_str(&Value::from(e.reason.to_string()).to_string());
    if let Some(Value::Object(d)) = &e.details {
        let mut parts = Vec::new();
        for k in ["name", "group", "kind", "uid"] {
            match d.get(k) {
                Some(Value::String(v)) if v.is_empty() => {}
                Some(v) => parts.push(format!("{}:{v}", Value::from(k))),
                None => {}
            }
        }
        if let Some(Value::Array(causes)) = d.get("causes") {
            let causes: Vec<String> = causes
                .iter()
                .map(|c| {
                    let fields: Vec<String> = ["reason", "message", "field"]
                        .iter()
                        .filter_map(|k| {
                            c.get(*k)
                                .filter(|v| v.as_str() != Some(""))
                                .map(|v| format!("{}:{v}", Value::from(*k)))
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            parts.push(format!(r#""causes":[{}]"#, causes.join(",")));
        }
        if let Some(v) = d.get("retryAfterSeconds") {
            parts.push(format!(r#""retryAfterSeconds":{v}"#));
        }
        out.push_str(&format!(r#","details":{{{}}}"#, parts.join(",")));
    }
    out.push_str(&format!(r#","code":{}}}"#, e.code.as_u16()));
    out.push('\n');
    out.into_bytes()
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Only a 500 is the server's own fault; an unavailable subresource (503), a
        // too-new resourceVersion (504) or a full disk (507) are conditions, not bugs.
        match self.code {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(code = self.code.as_u16(), message = %self.message, "request failed")
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                tracing::warn!(code = self.code.as_u16(), message = %self.message, "request refused")
            }
            c if c.is_server_error() => {
                tracing::debug!(code = c.as_u16(), message = %self.message, "request refused")
            }
            _ => {}
        }
        (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            status_body(&self),
        )
            .into_response()
    }
}

impl From<capstan_store::StoreError> for ApiError {
    fn from(e: capstan_store::StoreError) -> Self {
        use capstan_store::StoreError as E;
        match e {
            E::Compacted {
                requested,
                oldest_available,
            } => ApiError::expired(format!(
                "too old resource version: {requested} ({oldest_available})"
            )),
            E::FutureRevision { requested, current } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            E::Closed | E::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
            E::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                e.to_string(),
            ),
            E::NoSpace(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InternalError",
                format!("{e}; free disk space and retry"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// A success Status (used by deletecollection and some deletes).
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &ApiError) -> String {
        String::from_utf8(status_body(e)).unwrap()
    }

    #[test]
    fn store_failures_are_statuses_with_their_codes() {
        use capstan_store::StoreError as E;
        let code = |e: E| ApiError::from(e).code;
        assert_eq!(
            code(E::Unavailable("etcd: no leader".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            code(E::TooLarge("etcd: request is too large".into())),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            code(E::NoSpace("full".into())),
            StatusCode::INSUFFICIENT_STORAGE
        );
        let gone = ApiError::from(E::Compacted {
            requested: 5,
            oldest_available: 9,
        });
        assert_eq!((gone.code, gone.reason), (StatusCode::GONE, "Expired"));
    }

    #[test]
    fn status_bodies_are_byte_for_byte_upstreams() {
        assert_eq!(
            body(&ApiError::not_found("", "configmaps", "foo")),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"foo\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"foo\",\"kind\":\"configmaps\"},\"code\":404}\n"
        );
        assert_eq!(
            body(&ApiError::not_found("apps", "deployments", "d")),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"d\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"d\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"
        );
        let invalid = ApiError::invalid(
            "",
            "ConfigMap",
            "x",
            vec![Cause::invalid("metadata.name", "X", "must be lower case")],
        );
        let text = body(&invalid);
        assert!(
            text.contains("\"details\":{\"name\":\"x\",\"kind\":\"ConfigMap\",\"causes\":[{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"X\\\": must be lower case\",\"field\":\"metadata.name\"}]},\"code\":422}\n"),
            "{text}"
        );
        // The body is the same document to_json describes.
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let mut want = invalid.to_json();
        want["details"].as_object_mut().unwrap().remove("group");
        assert_eq!(parsed, want);
    }
}
