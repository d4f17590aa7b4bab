//! Authentication: the admin bearer token (constant-time compare). Requests without a valid
//! credential get a 401 Status; health endpoints are open, as upstream's are to probes.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::status::ApiError;
use crate::AppState;

const OPEN_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) => {
            if let Some(gate) = req.extensions().get::<crate::serve::ConnGate>() {
                gate.authenticated();
            }
            next.run(req).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}
