//! capstan's Kubernetes API server: TLS serving, authentication, routing and the Status
//! error shape. Resources, discovery and the rest of the API machinery grow here.

pub mod auth;
pub mod health;
pub mod pki;
pub mod serve;
pub mod status;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use capstan_store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub admin_token: Arc<str>,
}

/// The whole HTTP surface; usable in-process (e.g. by a kube::Client) without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(health::version))
        .route("/healthz", get(health::live))
        .route("/livez", get(health::live))
        .route("/readyz", get(health::ready))
        .fallback(|uri: axum::http::Uri| async move { status::ApiError::not_found(uri.path()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}
