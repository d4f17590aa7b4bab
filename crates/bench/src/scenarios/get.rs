//! `get`: random GETs of the created ConfigMaps from C clients — throughput and latency.

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};

use super::{with_clients, Ctx, XorShift};
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::Summary;

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    ctx.ensure_seeded().await?;
    let n = ctx.opts.count;
    let clients = ctx.opts.clients.max(1);
    let per_client = n.div_ceil(clients);
    let base: Arc<str> = ctx.configmaps().into();
    let (elapsed, lats) = with_clients(&ctx.ep, clients, |c, mut conn| {
        let base = base.clone();
        async move {
            let mut rng = XorShift::new(c as u64 + 1);
            let mut lat = Vec::with_capacity(per_client);
            let mut path = String::with_capacity(base.len() + 16);
            for _ in 0..per_client {
                path.clear();
                path.push_str(&base);
                path.push_str(&format!("/bench-{:06}", rng.below(n)));
                let t = Instant::now();
                let reply = conn.get(&path).await?;
                if reply.status != StatusCode::OK {
                    return Err(reply.unexpected(&Method::GET, &path));
                }
                lat.push(t.elapsed());
            }
            Ok(lat)
        }
    })
    .await?;
    let total = per_client * clients;
    let case = CaseResult::new("get", &format!("random c={clients}"), total as u64)
        .rate(total as f64 / elapsed.as_secs_f64())
        .latency(Summary::of(lats.into_iter().flatten().collect()));
    ctx.record(case);
    Ok(())
}
