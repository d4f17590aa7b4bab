//! `/version`, `/healthz`, `/livez`, `/readyz`: what probes and `kubectl version` read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::AppState;

/// The Kubernetes version capstan serves; kubectl picks its matching binary by the minor.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub async fn version() -> impl IntoResponse {
    Json(json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+capstan-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    }))
}

pub async fn live() -> impl IntoResponse {
    "ok"
}

/// Ready when the store answers and its last write did not fail for want of space.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let check = match state.store.current_revision().await {
        Ok(_) => state.store.write_health(),
        Err(e) => Err(e),
    };
    match check {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]storage failed: {e}\nreadyz check failed"),
        ),
    }
}
