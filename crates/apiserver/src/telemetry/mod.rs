//! What the server says about itself: health checks (`/livez`, `/readyz`, `/healthz`)
//! and Prometheus metrics (`/metrics`).

pub mod health;
pub mod metrics;
