//! `POST .../serviceaccounts/NAME/token` (upstream's pkg/registry/core/serviceaccount/storage
//! token.go): checks the TokenRequest and its bound object, signs a token, answers 201.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::rest::{self, json_response};
use crate::serving::service_account_jwt::{self as jwt, ObjectRef};
use crate::status::{ApiError, Cause};
use crate::types::Target;
use crate::AppState;

const GROUP: &str = "authentication.k8s.io";
/// Upstream's default `expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;
/// Upstream's validation minimum (10 minutes) and maximum (2^32 s).
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;
/// The longest token issued: longer requests are shortened, as upstream does under
/// `--service-account-max-token-expiration` (24 h here).
const CAP_EXPIRATION: i64 = 24 * 3600;

/// The request's spec, read field by field so each bad one is named.
struct Spec {
    audiences: Vec<String>,
    expiration_seconds: i64,
    bound: Option<Value>,
}

fn spec_of(req: &Value) -> Result<Spec, ApiError> {
    let invalid = |field: &str, v: &Value, detail: &str| {
        ApiError::invalid(
            GROUP,
            "TokenRequest",
            "",
            vec![Cause {
                reason: "FieldValueInvalid",
                field: field.to_string(),
                message: format!("Invalid value: {v}: {detail}"),
            }],
        )
    };
    let spec = req.get("spec").cloned().unwrap_or(Value::Null);
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, a) in items.iter().enumerate() {
                let Some(a) = a.as_str() else {
                    return Err(invalid(
                        &format!("spec.audiences[{i}]"),
                        a,
                        "must be a string",
                    ));
                };
                out.push(a.to_string());
            }
            out
        }
        Some(other) => return Err(invalid("spec.audiences", other, "must be a list")),
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", v, "must be an integer"))?,
    };
    let field = json!(expiration_seconds);
    if expiration_seconds < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            &field,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration_seconds > MAX_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            &field,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    Ok(Spec {
        audiences,
        expiration_seconds,
        bound: spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned(),
    })
}

/// What the token is bound to, from `boundObjectRef` (the object must exist, and have the
/// uid given, if one is).
#[derive(Default)]
struct Binding {
    pod: Option<ObjectRef>,
    secret: Option<ObjectRef>,
    node: Option<ObjectRef>,
}

async fn read(
    state: &AppState,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let rt = state
        .registry
        .find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    crate::storage::read(state, &rt, ns, name)
        .await?
        .map(|(obj, _)| obj)
        .ok_or_else(|| ApiError::not_found("", plural, name))
}

fn reference(obj: &Value) -> ObjectRef {
    ObjectRef {
        name: crate::object::name(obj).to_string(),
        uid: crate::object::meta_str(obj, "uid")
            .unwrap_or_default()
            .to_string(),
    }
}

async fn binding(
    state: &AppState,
    ns: &str,
    sa_name: &str,
    bound: Option<&Value>,
) -> Result<Binding, ApiError> {
    let Some(bound) = bound else {
        return Ok(Binding::default());
    };
    let text = |f: &str| bound.get(f).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind, name, uid) =
        (text("apiVersion"), text("kind"), text("name"), text("uid"));
    let mut out = Binding::default();
    // Bindings are to core/v1 objects only: another group is "type <gvk>" as upstream.
    let core = api_version == "v1" || api_version.is_empty();
    let obj = match kind {
        "Pod" if core => {
            let pod = read(state, "pods", Some(ns), name).await?;
            let runs_as = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if runs_as != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            // The pod's node rides along (upstream's ServiceAccountTokenPodNodeInfo).
            if let Some(node) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                let node = read(state, "nodes", None, node).await?;
                out.node = Some(reference(&node));
            }
            out.pod = Some(reference(&pod));
            pod
        }
        "Secret" if core => {
            let secret = read(state, "secrets", Some(ns), name).await?;
            out.secret = Some(reference(&secret));
            secret
        }
        "Node" if core => {
            let node = read(state, "nodes", None, name).await?;
            out.node = Some(reference(&node));
            node
        }
        _ => {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    if !uid.is_empty() && crate::object::meta_str(&obj, "uid") != Some(uid) {
        return Err(ApiError::conflict(
            "",
            kind,
            name,
            &format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
        ));
    }
    Ok(out)
}

pub async fn create(
    state: &AppState,
    t: &Target,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let sa_name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let Some(tokens) = state.tokens.clone() else {
        return Err(ApiError::internal(
            "this server has no service account signing key",
        ));
    };
    let req = rest::decode_body(content_type, body)?;
    let spec = spec_of(&req)?;
    let sa = read(state, "serviceaccounts", Some(ns), sa_name).await?;
    crate::admission::node_restriction::admit_token(state, t, spec.bound.as_ref()).await?;
    let binding = binding(state, ns, sa_name, spec.bound.as_ref()).await?;
    let audiences = if spec.audiences.is_empty() {
        tokens.api_audiences.clone()
    } else {
        spec.audiences
    };
    let expiration_seconds = spec.expiration_seconds.min(CAP_EXPIRATION);
    let now = chrono::Utc::now();
    let (token, claims) = jwt::issue(
        &tokens.key,
        jwt::Request {
            namespace: ns,
            service_account: reference(&sa),
            audiences: audiences.clone(),
            expiration_seconds,
            pod: binding.pod,
            secret: binding.secret,
            node: binding.node,
        },
        now.timestamp(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(namespace = ns, serviceaccount = sa_name, jti = %claims.jti, expiration_seconds, "issued a service account token");
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration_seconds});
    if let Some(b) = spec.bound {
        spec_out["boundObjectRef"] = b;
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": {
            "name": sa_name,
            "namespace": ns,
            "creationTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(json_response(StatusCode::CREATED, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_defaults_and_bounds_name_the_field() {
        let spec = spec_of(&json!({"spec": {"audiences": null}})).unwrap();
        assert_eq!(spec.expiration_seconds, 3600);
        assert!(spec.audiences.is_empty());
        let e = spec_of(&json!({"spec": {"expirationSeconds": 60}}))
            .err()
            .unwrap();
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        assert!(spec_of(&json!({"spec": {"expirationSeconds": 600}})).is_ok());
        let e = spec_of(&json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}}))
            .err()
            .unwrap();
        assert!(
            e.message.contains("spec.expirationSeconds"),
            "{}",
            e.message
        );
        let e = spec_of(&json!({"spec": {"audiences": [1]}})).err().unwrap();
        assert!(e.message.contains("spec.audiences[0]"), "{}", e.message);
    }
}
