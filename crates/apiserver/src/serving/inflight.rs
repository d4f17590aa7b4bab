//! Overload protection: at most N requests in flight (upstream's --max-requests-inflight),
//! counted once a request is authenticated and its body has arrived, so clients that stall
//! mid-upload cannot crowd out the rest; watches have a cap of their own. Over a cap: 429.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::status::ApiError;

/// Upstream has no separate cap on watches; each costs a task and small buffers, so this
/// many is far from a memory risk while bounding what one client can open.
pub const DEFAULT_MAX_WATCHES: usize = 8192;

#[derive(Clone)]
pub struct Limiter {
    requests: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    max_requests: usize,
    max_watches: usize,
}

impl Limiter {
    pub fn new(max_inflight: usize) -> Self {
        Limiter::with_watches(max_inflight, DEFAULT_MAX_WATCHES)
    }

    pub fn with_watches(max_inflight: usize, max_watches: usize) -> Self {
        Limiter {
            requests: Arc::new(Semaphore::new(max_inflight.max(1))),
            watches: Arc::new(Semaphore::new(max_watches.max(1))),
            max_requests: max_inflight.max(1),
            max_watches: max_watches.max(1),
        }
    }

    /// Requests and watches in flight now.
    pub fn in_use(&self) -> (usize, usize) {
        (
            self.max_requests - self.requests.available_permits(),
            self.max_watches - self.watches.available_permits(),
        )
    }

    /// A place for a request (held until its response is built), or the 429 to send.
    pub fn request(&self) -> Result<OwnedSemaphorePermit, TooMany> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooMany)
    }

    /// A place for a watch (held for as long as it streams), or the 429 to send.
    pub fn watch(&self) -> Result<OwnedSemaphorePermit, TooMany> {
        self.watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooMany)
    }
}

/// Over a cap: answered 429 with Retry-After.
#[derive(Debug)]
pub struct TooMany;

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        too_many()
    }
}

fn too_many() -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests, please try again later.",
    );
    e.details = Some(json!({"retryAfterSeconds": 1}));
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    resp
}

/// Paths whose handler takes its own place once the body is in (see `routing`), and
/// probes, which must answer however busy the server is.
fn limited_elsewhere(path: &str) -> bool {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    ["/api", "/apis", "/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| under(p))
}

pub async fn limit(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    if limited_elsewhere(req.uri().path()) {
        return next.run(req).await;
    }
    match limiter.request() {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(over) => over.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[test]
    fn probes_and_api_paths_are_limited_in_their_handlers() {
        assert!(limited_elsewhere("/api/v1/pods"));
        assert!(limited_elsewhere("/apis"));
        assert!(limited_elsewhere("/readyz"));
        assert!(!limited_elsewhere("/openapi/v3"));
        assert!(!limited_elsewhere("/apiextensions"));
    }

    #[tokio::test]
    async fn over_the_limit_is_a_429_status() {
        let limiter = Limiter::new(1);
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .layer(axum::middleware::from_fn_with_state(limiter, limit));
        let first = tokio::spawn(
            app.clone().oneshot(
                axum::http::Request::get("/slow")
                    .body(Body::empty())
                    .unwrap(),
            ),
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let second = app
            .clone()
            .oneshot(
                axum::http::Request::get("/fast")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(second.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(second.into_body(), usize::MAX)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (
                status["kind"].as_str(),
                status["reason"].as_str(),
                status["code"].as_i64()
            ),
            (Some("Status"), Some("TooManyRequests"), Some(429))
        );
        // `?watch=true` is no way around the limit (real watches are capped in routing),
        // and the slot frees once the slow request ends.
        let watch = app
            .clone()
            .oneshot(
                axum::http::Request::get("/fast?watch=true")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(watch.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        let again = app
            .oneshot(
                axum::http::Request::get("/fast")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
}
