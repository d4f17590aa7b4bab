//! API writes of the agent and the simulator go through here: bounded in concurrency, and
//! retried with exponential back-off while the answer says "later" (409, 429, 5xx, transport).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Writer {
    permits: Arc<Semaphore>,
}

/// Whether an error may go away by itself: a conflict (the op re-reads), throttling, a server
/// error or a broken connection. Anything else (404, 400, 422, 403) is the final answer.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Writer {
    pub fn new(max_in_flight: usize) -> Writer {
        Writer {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Run `op` until it succeeds or fails for good. The permit is held only while a request
    /// is in flight, not while backing off.
    pub async fn write<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut delay = FIRST_DELAY;
        loop {
            let result = {
                let _permit = self.permits.acquire().await;
                op().await
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if !is_transient(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(what, error = %e, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        )
    }

    #[tokio::test]
    async fn conflicts_and_server_errors_are_retried_until_they_succeed() {
        let w = Writer::new(2);
        let calls = AtomicU32::new(0);
        let out = w
            .write("test", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => Err(api_error(409)),
                        1 => Err(api_error(503)),
                        2 => Err(api_error(429)),
                        _ => Ok(n),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 3);
    }

    #[tokio::test]
    async fn a_final_answer_is_returned_at_once() {
        let w = Writer::new(1);
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = w
            .write("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(api_error(404)) }
            })
            .await;
        assert!(is_not_found(&out.unwrap_err()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
