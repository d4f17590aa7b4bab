//! `create`: N ConfigMaps of about 1 KiB from C concurrent clients — throughput and the
//! latency of each create.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{with_clients, Ctx};
use crate::error::BenchError;
use crate::kubeconfig::Endpoint;
use crate::report::CaseResult;
use crate::stats::Summary;

/// Payload length that makes a stored ConfigMap about 1 KiB.
const PAYLOAD: usize = 900;

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let n = ctx.opts.count;
    let path = ctx.configmaps();
    let (elapsed, lat) = create_objects(&ctx.ep, &path, "bench", n, ctx.opts.clients).await?;
    ctx.seeded = n;
    let case = CaseResult::new(
        "create",
        &format!("configmap-1KiB c={}", ctx.opts.clients),
        n as u64,
    )
    .rate(n as f64 / elapsed.as_secs_f64())
    .latency(Summary::of(lat));
    ctx.record(case);
    Ok(())
}

/// Create `{prefix}-000000 … {prefix}-{n-1}` under the collection `path` from `clients`
/// connections. Any answer but 201 fails the run: later scenarios rely on every object.
pub async fn create_objects(
    ep: &Endpoint,
    path: &str,
    prefix: &str,
    n: usize,
    clients: usize,
) -> Result<(Duration, Vec<Duration>), BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let path: Arc<str> = path.into();
    let prefix: Arc<str> = prefix.into();
    let payload: Arc<str> = "x".repeat(PAYLOAD).into();
    let (elapsed, per_client) = with_clients(ep, clients, |_, mut conn| {
        let (next, path, prefix, payload) =
            (next.clone(), path.clone(), prefix.clone(), payload.clone());
        async move {
            let mut lat = Vec::with_capacity(n / clients.max(1) + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(lat);
                }
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{prefix}-{i:06}","labels":{{"bench":"capstan"}}}},"data":{{"payload":"{payload}"}}}}"#
                );
                let t = Instant::now();
                let reply = conn.send_json(Method::POST, &path, Bytes::from(body)).await?;
                if reply.status != StatusCode::CREATED {
                    return Err(reply.unexpected(&Method::POST, &path));
                }
                lat.push(t.elapsed());
            }
        }
    })
    .await?;
    Ok((elapsed, per_client.into_iter().flatten().collect()))
}
