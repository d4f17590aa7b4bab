//! `update-contention`: C clients doing read-modify-write on one ConfigMap's counter,
//! retrying on 409 Conflict. Successful updates/s and conflicts; the final counter must
//! equal the number of successful updates, else an update was lost and the run fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{with_clients, Ctx};
use crate::client::Conn;
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::Summary;

const NAME: &str = "contention";

struct ClientResult {
    successes: u64,
    conflicts: u64,
    /// Read-modify-write rounds that ended in success, from first read to the 200.
    latencies: Vec<std::time::Duration>,
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let collection = ctx.configmaps();
    let path: Arc<str> = format!("{collection}/{NAME}").into();
    {
        let mut conn = Conn::open(&ctx.ep).await?;
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{NAME}"}},"data":{{"count":"0"}}}}"#
        );
        conn.send_json(Method::POST, &collection, Bytes::from(body))
            .await?
            .ok(&Method::POST, &collection)?;
    }
    let clients = ctx.opts.contention_clients.max(1);
    let tickets = Arc::new(AtomicUsize::new(0));
    let total = ctx.opts.updates;
    let (elapsed, results) = with_clients(&ctx.ep, clients, |_, mut conn| {
        let (tickets, path) = (tickets.clone(), path.clone());
        async move {
            let mut r = ClientResult {
                successes: 0,
                conflicts: 0,
                latencies: Vec::new(),
            };
            // Each ticket is one increment this client must land, however many tries it takes.
            while tickets.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                loop {
                    let body = conn.get(&path).await?.ok(&Method::GET, &path)?;
                    let mut obj: serde_json::Value = serde_json::from_slice(&body)
                        .map_err(|e| BenchError::Http(format!("GET {path}: {e}")))?;
                    let count: u64 = obj["data"]["count"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .ok_or_else(|| BenchError::Scenario(format!("{path}: no data.count")))?;
                    // The body keeps metadata.resourceVersion: the PUT is a compare-and-swap.
                    obj["data"]["count"] = serde_json::Value::String((count + 1).to_string());
                    let body =
                        serde_json::to_vec(&obj).map_err(|e| BenchError::Http(e.to_string()))?;
                    let reply = conn
                        .send_json(Method::PUT, &path, Bytes::from(body))
                        .await?;
                    match reply.status {
                        StatusCode::OK => {
                            r.successes += 1;
                            r.latencies.push(t.elapsed());
                            break;
                        }
                        StatusCode::CONFLICT => r.conflicts += 1,
                        _ => return Err(reply.unexpected(&Method::PUT, &path)),
                    }
                }
            }
            Ok(r)
        }
    })
    .await?;
    let successes: u64 = results.iter().map(|r| r.successes).sum();
    let conflicts: u64 = results.iter().map(|r| r.conflicts).sum();
    let mut conn = Conn::open(&ctx.ep).await?;
    let body = conn.get(&path).await?.ok(&Method::GET, &path)?;
    let obj: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    let final_count: u64 = obj["data"]["count"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let case = CaseResult::new(
        "update-contention",
        &format!("one object c={clients}"),
        successes,
    )
    .rate(successes as f64 / elapsed.as_secs_f64())
    .latency(Summary::of(
        results.into_iter().flat_map(|r| r.latencies).collect(),
    ))
    .figure("conflicts", conflicts as f64);
    ctx.record(case);
    ctx.check(
        "update-contention",
        "no lost update",
        no_lost_update(final_count, successes, total as u64),
        format!("counter {final_count}, successful updates {successes}, asked {total}"),
    );
    Ok(())
}

/// Every acknowledged increment is in the counter, and every ticket was landed.
fn no_lost_update(counter: u64, successes: u64, asked: u64) -> bool {
    counter == successes && successes == asked
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lost_or_phantom_update_fails() {
        assert!(super::no_lost_update(100, 100, 100));
        assert!(!super::no_lost_update(99, 100, 100), "lost update");
        assert!(
            !super::no_lost_update(101, 100, 100),
            "update counted that did not succeed"
        );
        assert!(!super::no_lost_update(90, 90, 100), "tickets left unserved");
    }
}
