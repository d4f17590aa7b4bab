//! The outermost layer: a panic while serving one request becomes a 500 Status for that
//! request alone (and an error in the log, since it is a bug), never a dropped connection.

use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use crate::status::ApiError;

pub async fn catch(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(verb = %method, path = %path, panic = %what, "request handler panicked");
            ApiError::internal(format!(
                "an internal error occurred while serving this request ({what}); this is a bug"
            ))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_status() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    let v: Vec<u8> = Vec::new();
                    #[allow(clippy::indexing_slicing)]
                    let x = v[std::hint::black_box(3)];
                    x.to_string()
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(super::catch));
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        let ok = app
            .oneshot(axum::http::Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
}
