//! Reading a request body whole, once, the same way wherever it is read (routing, the
//! authorizer's escalation check, the audit log): bounded in size and in time.

use crate::status::ApiError;

/// A request body must have arrived within this (upstream's default request timeout).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads a request body whole: over `MAX_BODY` is a 413, not arriving within
/// `BODY_TIMEOUT` a 408, each a Status (a client trickling its upload holds nothing long).
pub async fn read_body(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, crate::MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "the request body is larger than the {} byte limit",
                crate::MAX_BODY
            ),
        )),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            format!(
                "the request body did not arrive within {} seconds",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}
