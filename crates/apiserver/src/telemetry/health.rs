//! `/version`, `/healthz`, `/livez`, `/readyz`: what probes and `kubectl version` read.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::AppState;

/// The Kubernetes version capstan serves; kubectl picks its matching binary by the minor.
pub async fn version() -> impl IntoResponse {
    Json(json!({
        "major": crate::discovery::KUBE_MAJOR,
        "minor": crate::discovery::KUBE_MINOR,
        "gitVersion": format!("v{}.{}.0+capstan-{}", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    }))
}

/// Which probe endpoint a check list belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Healthz,
    Livez,
    Readyz,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Healthz => "healthz",
            Probe::Livez => "livez",
            Probe::Readyz => "readyz",
        }
    }

    /// The named checks, in upstream's order (`ping`, `log`, then storage; upstream's
    /// `etcd` is our store). Only readiness asks whether the store can take writes: a full
    /// disk makes the server unready, but restarting it (liveness) would not help.
    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Healthz | Probe::Livez => &["ping", "log", "storage"],
            Probe::Readyz => &["ping", "log", "storage", "storage-writable", "shutdown"],
        }
    }
}

/// Run one named check: `Ok` or why it failed.
async fn run_check(state: &AppState, name: &str) -> Result<(), String> {
    match name {
        "ping" | "log" | "shutdown" => Ok(()),
        "storage" => state
            .store
            .current_revision()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "storage-writable" => state.store.write_health().map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// `/healthz`, `/livez`, `/readyz` as upstream's healthz handler answers them: `ok`, or with
/// `?verbose` one `[+]name ok` line per check and `{probe} check passed`; `?exclude=name`
/// skips a check. Any failing check prints every line and `{probe} check failed`.
async fn probe_all(
    state: &AppState,
    probe: Probe,
    query: &HashMap<String, String>,
    raw_query: &str,
) -> (StatusCode, String) {
    let verbose = query.contains_key("verbose");
    let excluded: Vec<&str> = raw_query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("exclude="))
        .collect();
    let mut out = String::new();
    let mut failed = false;
    for name in probe.checks() {
        if excluded.contains(name) {
            out.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match run_check(state, name).await {
            Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                failed = true;
                out.push_str(&format!("[-]{name} failed: {e}\n"));
            }
        }
    }
    if failed {
        // Upstream's answer: 500 with the named checks (the failing line carries the
        // store's reason, which upstream withholds).
        out.push_str(&format!("{} check failed", probe.name()));
        return (StatusCode::INTERNAL_SERVER_ERROR, out);
    }
    if !verbose {
        return (StatusCode::OK, "ok".to_string());
    }
    out.push_str(&format!("{} check passed\n", probe.name()));
    (StatusCode::OK, out)
}

/// `/{probe}/{name}`: one check; `ok`, a 500 naming the failure, or 404 for an unknown name.
async fn probe_one(state: &AppState, probe: Probe, name: &str) -> axum::response::Response {
    if !probe.checks().contains(&name) {
        return crate::status::ApiError::path_not_found(&format!("/{}/{name}", probe.name()))
            .into_response();
    }
    match run_check(state, name).await {
        Ok(()) => (StatusCode::OK, "ok".to_string()).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal server error: {e}"),
        )
            .into_response(),
    }
}

macro_rules! probe_handlers {
    ($all:ident, $one:ident, $probe:expr) => {
        pub async fn $all(
            State(state): State<AppState>,
            Query(query): Query<HashMap<String, String>>,
            uri: axum::http::Uri,
        ) -> impl IntoResponse {
            probe_all(&state, $probe, &query, uri.query().unwrap_or("")).await
        }

        pub async fn $one(
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> axum::response::Response {
            probe_one(&state, $probe, &name).await
        }
    };
}

probe_handlers!(healthz, healthz_check, Probe::Healthz);
probe_handlers!(livez, livez_check, Probe::Livez);
probe_handlers!(readyz, readyz_check, Probe::Readyz);
