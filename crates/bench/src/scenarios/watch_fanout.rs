//! `watch-fanout`: W watchers on the tool's namespace while M ConfigMaps are written one
//! after another. Delivery latency runs from the write's acknowledgement to the event's
//! receipt at each watcher; every watcher must see every write exactly once.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use tokio::sync::{watch, Notify, Semaphore};

use super::Ctx;
use crate::client::Conn;
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::Summary;

/// How long watchers may take to catch up after the last write before a missing event
/// counts as missed.
const GRACE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    object: Object<'a>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow, default)]
    metadata: Meta<'a>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Default)]
struct Receipts {
    /// (object index, nanoseconds since the run's base instant).
    got: Vec<(u32, u64)>,
    error: Option<String>,
}

/// Which `fanout-NNNNNN` object an event is about, if any.
fn fanout_index(line: &[u8]) -> Result<Option<u32>, String> {
    let ev: Event = serde_json::from_slice(line).map_err(|e| format!("bad event: {e}"))?;
    if ev.kind == "ERROR" {
        return Err(format!("ERROR event: {}", String::from_utf8_lossy(line)));
    }
    if ev.kind != "ADDED" {
        return Ok(None);
    }
    Ok(ev
        .object
        .metadata
        .name
        .strip_prefix("fanout-")
        .and_then(|i| i.parse().ok()))
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let w = ctx.opts.watchers.max(1);
    let m = ctx.opts.events.max(1);
    let collection = ctx.configmaps();
    let mut writer = Conn::open(&ctx.ep).await?;
    let list_path = format!("{collection}?limit=1");
    let body = writer.get(&list_path).await?.ok(&Method::GET, &list_path)?;
    let list: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let watch_path: Arc<str> = format!("{collection}?watch=1&resourceVersion={rv}").into();

    let base = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Connections are opened a few at a time, as a fleet of real clients would arrive.
    let opening = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(w);
    for _ in 0..w {
        let (ep, path) = (ctx.ep.clone(), watch_path.clone());
        let (ready, done, progress, opening) = (
            ready.clone(),
            done.clone(),
            progress.clone(),
            opening.clone(),
        );
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Receipts::default();
            let stream = async {
                let _permit = opening.acquire().await;
                let mut conn = Conn::open(&ep).await?;
                conn.stream(&path).await.map(|s| (conn, s))
            }
            .await;
            ready.fetch_add(1, Ordering::AcqRel);
            progress.notify_one();
            let (_conn, mut body) = match stream {
                Ok(s) => s,
                Err(e) => {
                    out.error = Some(e.to_string());
                    done.fetch_add(1, Ordering::AcqRel);
                    progress.notify_one();
                    return out;
                }
            };
            let mut seen = vec![false; m];
            let mut distinct = 0;
            while distinct < m {
                tokio::select! {
                    line = body.next_line() => match line {
                        Ok(Some(line)) => match fanout_index(line) {
                            Ok(Some(i)) if (i as usize) < m => {
                                let at = base.elapsed().as_nanos() as u64;
                                out.got.push((i, at));
                                if !std::mem::replace(&mut seen[i as usize], true) {
                                    distinct += 1;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                out.error = Some(e);
                                break;
                            }
                        },
                        Ok(None) => {
                            out.error = Some("the server ended the watch".into());
                            break;
                        }
                        Err(e) => {
                            out.error = Some(e.to_string());
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            done.fetch_add(1, Ordering::AcqRel);
            progress.notify_one();
            out
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Acquire) < w && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), progress.notified()).await;
    }

    // Write the objects one after another, noting when each was acknowledged.
    let acks: Vec<AtomicU64> = (0..m).map(|_| AtomicU64::new(0)).collect();
    let mut sent = vec![0u64; m];
    let interval = Duration::from_millis(ctx.opts.event_interval_ms);
    let writes_started = Instant::now();
    for i in 0..m {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"fanout-{i:06}"}},"data":{{"i":"{i}"}}}}"#
        );
        sent[i] = base.elapsed().as_nanos() as u64;
        writer
            .send_json(Method::POST, &collection, Bytes::from(body))
            .await?
            .ok(&Method::POST, &collection)?;
        acks[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    let writes_took = writes_started.elapsed();
    let deadline = Instant::now() + GRACE;
    while done.load(Ordering::Acquire) < w && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), progress.notified()).await;
    }
    let _ = stop_tx.send(true);

    let mut latencies = Vec::with_capacity(w * m);
    let mut from_send = Vec::with_capacity(w * m);
    let (mut missed, mut duplicated, mut early) = (0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    for t in tasks {
        let r = t
            .await
            .map_err(|e| BenchError::Scenario(format!("watcher task failed: {e}")))?;
        let mut seen = vec![false; m];
        for (i, at) in &r.got {
            let i = *i as usize;
            if std::mem::replace(&mut seen[i], true) {
                duplicated += 1;
                continue;
            }
            let ack = acks[i].load(Ordering::Acquire);
            // An event may reach a watcher before the writer has read its own reply.
            if *at < ack {
                early += 1;
            }
            latencies.push(Duration::from_nanos(at.saturating_sub(ack)));
            from_send.push(Duration::from_nanos(at.saturating_sub(sent[i])));
        }
        missed += seen.iter().filter(|s| !**s).count() as u64;
        if let Some(e) = r.error {
            errors.push(e);
        }
    }
    let deliveries = latencies.len() as u64;
    let case = CaseResult::new(
        "watch-fanout",
        &format!("watchers={w} events={m}"),
        deliveries,
    )
    .rate(deliveries as f64 / writes_took.as_secs_f64())
    .latency(Summary::of(latencies))
    .figure("missed", missed as f64)
    .figure("duplicated", duplicated as f64)
    .figure("before_ack", early as f64);
    ctx.record(case);
    // The same deliveries timed from the write's request leaving the tool: on a server that
    // notifies watchers before it answers the writer, the figure above is mostly zeros.
    ctx.record(
        CaseResult::new("watch-fanout", "from request sent", deliveries)
            .latency(Summary::of(from_send)),
    );
    errors.sort();
    errors.dedup();
    ctx.check(
        "watch-fanout",
        "every event exactly once",
        missed == 0 && duplicated == 0 && errors.is_empty(),
        format!(
            "{deliveries} of {} deliveries, missed {missed}, duplicated {duplicated}{}",
            w * m,
            if errors.is_empty() {
                String::new()
            } else {
                format!(", watcher errors: {}", errors.join("; "))
            }
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_matched_by_name() {
        let added = br#"{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"fanout-000042","resourceVersion":"9"},"data":{"i":"42"}}}"#;
        assert_eq!(fanout_index(added), Ok(Some(42)));
        let other = br#"{"type":"ADDED","object":{"metadata":{"name":"contention"}}}"#;
        assert_eq!(fanout_index(other), Ok(None));
        let bookmark = br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}"#;
        assert_eq!(fanout_index(bookmark), Ok(None));
        let error = br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#;
        assert!(fanout_index(error).unwrap_err().contains("410"));
    }
}
