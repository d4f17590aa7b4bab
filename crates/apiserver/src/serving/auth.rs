//! Authentication, as kube-apiserver's chain decides it: a verified client certificate (CN
//! user, O groups); else a bearer token (scheme matched case-insensitively) that is the
//! admin token, a bootstrap token its Secret vouches for, or else a valid service-account
//! JWT, passes
//! with its `User` in the request's extensions; any other is a 401. A request with no
//! credentials is the anonymous user, who may only read the health endpoints and `/version`
//! (upstream's `system:public-info-viewer`); anything else is upstream's 403. This process's
//! own components come with their `User` already set (`in_process::client_as`).

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::serving::client_cert::ClientCertIdentity;
use crate::serving::request_info::{decode_path, RequestInfo};
use crate::serving::service_account_jwt::looks_like_jwt;
use crate::serving::user_info::User;
use crate::status::ApiError;
use crate::AppState;

const OPEN_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Upstream's warning when `Authorization: Bearer  token` (two spaces) is ignored.
const EXTRA_SPACE_WARNING: &str =
    "the provided Authorization header contains extra space before the bearer token, and is ignored";

/// What the `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    /// No header, another scheme, or an empty token: the request is anonymous.
    None {
        extra_space: bool,
    },
    Bearer(&'a [u8]),
}

/// Upstream's bearer-token authenticator: trim, split on single spaces into at most three
/// parts, scheme compared without case; an empty token (`Bearer  x`) is no token at all.
fn credential(header: Option<&HeaderValue>) -> Credential<'_> {
    let Some(raw) = header.map(HeaderValue::as_bytes) else {
        return Credential::None { extra_space: false };
    };
    let raw = raw.trim_ascii();
    let mut parts = raw.splitn(3, |b| *b == b' ');
    let scheme = parts.next().unwrap_or_default();
    let Some(token) = parts.next() else {
        return Credential::None { extra_space: false };
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Credential::None { extra_space: false };
    }
    if token.is_empty() {
        return Credential::None {
            extra_space: parts.next().is_some(),
        };
    }
    Credential::Bearer(token)
}

/// The one object anonymous requests may reach past the public endpoints.
const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Let the request on as `user`: its connection counts as authenticated from now on.
async fn admit(mut req: Request, next: Next, user: User) -> Response {
    if let Some(gate) = req.extensions().get::<crate::serving::serve::ConnGate>() {
        gate.authenticated();
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return next.run(req).await;
    }
    // This process's own components (`in_process::client_as`): the user they act as is set
    // by the client, which only in-process code can build (extensions never cross a socket).
    if req
        .extensions()
        .get::<crate::serving::in_process::InProcess>()
        .is_some()
    {
        if let Some(user) = req.extensions().get::<User>().cloned() {
            return admit(req, next, user).await;
        }
    }
    // Upstream's union authenticator tries the client certificate before bearer tokens.
    if let Some(ClientCertIdentity(identity)) = req.extensions().get::<ClientCertIdentity>() {
        return match identity.clone() {
            Ok(user) => admit(req, next, user).await,
            Err(e) => {
                tracing::debug!(error = %e, "client certificate refused");
                ApiError::unauthorized().into_response()
            }
        };
    }
    match credential(req.headers().get(AUTHORIZATION)) {
        Credential::Bearer(token) if bool::from(token.ct_eq(state.admin_token.as_bytes())) => {
            admit(req, next, User::admin()).await
        }
        // A join token (`<id>.<secret>`): checked against its Secret in kube-system.
        Credential::Bearer(token)
            if std::str::from_utf8(token)
                .ok()
                .and_then(crate::serving::bootstrap_token::split)
                .is_some() =>
        {
            let Some((id, secret)) = std::str::from_utf8(token)
                .ok()
                .and_then(crate::serving::bootstrap_token::split)
            else {
                return ApiError::unauthorized().into_response();
            };
            match crate::serving::bootstrap_token::authenticate(&state, id, secret).await {
                Ok(user) => admit(req, next, user).await,
                Err(e) => {
                    tracing::debug!(token_id = id, error = %e, "bootstrap token refused");
                    ApiError::unauthorized().into_response()
                }
            }
        }
        // Only after the constant-time comparison failed: a service-account token.
        Credential::Bearer(token) if looks_like_jwt(token) && state.tokens.is_some() => {
            let Some(tokens) = state.tokens.clone() else {
                return ApiError::unauthorized().into_response();
            };
            let Ok(token) = std::str::from_utf8(token).map(str::to_owned) else {
                return ApiError::unauthorized().into_response();
            };
            match tokens.authenticate(&state, &token, None).await {
                Ok(done) => admit(req, next, User(std::sync::Arc::new(done.user))).await,
                Err(e) => {
                    tracing::debug!(error = %e, "service account token refused");
                    ApiError::unauthorized().into_response()
                }
            }
        }
        // A credential that fails is never taken for anonymous (upstream's FailOnError).
        Credential::Bearer(_) => ApiError::unauthorized().into_response(),
        // kubeadm's discovery: a joining node reads the cluster-info ConfigMap before it has
        // any trust; RBAC (the bootstrap policy's Role) decides, as upstream's anonymous user.
        Credential::None { .. }
            if req.method() == axum::http::Method::GET && path == CLUSTER_INFO_PATH =>
        {
            let mut req = req;
            req.extensions_mut().insert(User::anonymous());
            next.run(req).await
        }
        Credential::None { extra_space } => {
            let decoded = match decode_path(path) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let info = RequestInfo::new(req.method().as_str(), &decoded, &query_map(req.uri()));
            let resp = info.anonymous_forbidden().into_response();
            if extra_space {
                crate::encoding::field_validation::with_warnings(
                    resp,
                    &[EXTRA_SPACE_WARNING.to_string()],
                )
            } else {
                resp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, want: Credential<'_>) {
        let h = HeaderValue::from_str(header).unwrap();
        assert_eq!(credential(Some(&h)), want, "{header:?}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_empty_tokens_are_anonymous() {
        check("Bearer abc", Credential::Bearer(b"abc"));
        check("bearer abc", Credential::Bearer(b"abc"));
        check("BEARER abc ", Credential::Bearer(b"abc"));
        check(
            "Basic dXNlcjpwdw==",
            Credential::None { extra_space: false },
        );
        check("Bearer", Credential::None { extra_space: false });
        check("Bearer  abc", Credential::None { extra_space: true });
        assert_eq!(credential(None), Credential::None { extra_space: false });
    }
}
