//! TokenReview and SelfSubjectReview (authentication.k8s.io): answered on create from the
//! authenticator and the request's own `User`, never stored.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::rest::{self, json_response};
use crate::serving::user_info::User;
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A review the request addresses: `tokenreviews` or `selfsubjectreviews`.
pub async fn create(
    state: &AppState,
    t: &Target,
    user: Option<&User>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let review = rest::decode_body(content_type, body)?;
    let api_version = t.rt.api_version();
    match t.rt.plural.as_str() {
        "tokenreviews" => token_review(state, &api_version, review).await,
        "selfsubjectreviews" => {
            // Authentication always leaves a user on a request that reaches here.
            let Some(user) = user else {
                return Err(ApiError::unauthorized());
            };
            let out = json!({
                "kind": "SelfSubjectReview",
                "apiVersion": api_version,
                "metadata": {"creationTimestamp": now()},
                "status": {"userInfo": user.0.to_json()},
            });
            Ok(json_response(StatusCode::CREATED, &out))
        }
        // authorization.k8s.io's reviews.
        _ => {
            let Some(user) = user else {
                return Err(ApiError::unauthorized());
            };
            crate::authz::reviews::create(state, t, user, review).await
        }
    }
}

async fn token_review(
    state: &AppState,
    api_version: &str,
    review: Value,
) -> Result<Response, ApiError> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let wanted: Option<Vec<String>> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let api_audiences = state
        .tokens
        .as_ref()
        .map(|t| t.api_audiences.clone())
        .unwrap_or_default();
    let status = if subtle::ConstantTimeEq::ct_eq(token.as_bytes(), state.admin_token.as_bytes())
        .into()
    {
        let audiences = wanted.unwrap_or(api_audiences);
        json!({"authenticated": true, "user": User::admin().0.to_json(), "audiences": audiences})
    } else {
        let outcome = match &state.tokens {
            Some(tokens) => tokens.authenticate(state, token, wanted.as_deref()).await,
            None => Err(crate::serving::service_account_jwt::TokenError::Malformed),
        };
        match outcome {
            Ok(done) => json!({
                "authenticated": true,
                "user": done.user.to_json(),
                "audiences": done.audiences,
            }),
            Err(e) => json!({"user": {}, "error": format!("[invalid bearer token, {e}]")}),
        }
    };
    let mut out = review;
    out["kind"] = json!("TokenReview");
    out["apiVersion"] = json!(api_version);
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = json!(now());
    out["status"] = status;
    Ok(json_response(StatusCode::CREATED, &out))
}
