//! Figure printer for the SQLite store (not a timed test): durable writes/s at 1, 8 and 64
//! writers with 1 KiB values, ranging 10,000 keys, and watch delivery latency with 1,000
//! watchers. `STORE_BENCH_QUICK=1` shrinks the counts for CI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest, SqliteConfig, SqliteStore, Store, StoreExt};
use futures::StreamExt;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn open(dir: &tempfile::TempDir, name: &str) -> Arc<SqliteStore> {
    let mut c = SqliteConfig::new(dir.path().join(name));
    c.compaction = None;
    SqliteStore::open(c).expect("open store")
}

async fn writes(dir: &tempfile::TempDir, writers: usize, total: usize) {
    let store = open(dir, &format!("writes-{writers}.db"));
    let value = Bytes::from(vec![b'v'; 1024]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..total).step_by(writers) {
                let t = Instant::now();
                store
                    .put(
                        format!("/registry/configmaps/bench/w{w}-{i:08}").as_bytes(),
                        value.clone(),
                    )
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    println!(
        "writes     writers={writers:<3} count={total:<6} {:>9.0} writes/s   latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
    );
    store.close();
}

async fn ranges(dir: &tempfile::TempDir, keys: usize, runs: usize) {
    let store = open(dir, "range.db");
    let value = Bytes::from(vec![b'v'; 1024]);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(64) {
                store
                    .put(
                        format!("/registry/configmaps/r/{i:08}").as_bytes(),
                        value.clone(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.put(b"/registry/other", value.clone()).await.unwrap();
    let range = KeyRange::prefix(&b"/registry/configmaps/r/"[..]);
    let mut lat = Vec::new();
    let mut past = Vec::new();
    let at = store.current_revision().await.unwrap();
    store
        .put(b"/registry/configmaps/r/00000000", value.clone())
        .await
        .unwrap();
    for _ in 0..runs {
        let t = Instant::now();
        let r = store.range(RangeRequest::new(range.clone())).await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(r.kvs.len(), keys);
        let t = Instant::now();
        let r = store
            .range(RangeRequest::new(range.clone()).at(at))
            .await
            .unwrap();
        past.push(t.elapsed());
        assert_eq!(r.kvs.len(), keys);
    }
    let mut ko = Vec::new();
    for _ in 0..runs {
        let mut req = RangeRequest::new(range.clone());
        req.keys_only = true;
        let t = Instant::now();
        let r = store.range(req).await.unwrap();
        ko.push(t.elapsed());
        assert_eq!(r.kvs.len(), keys);
    }
    ko.sort();
    println!("range      keys only: p50 {:.2} ms", ms(pct(&ko, 0.5)));
    lat.sort();
    past.sort();
    println!(
        "range      keys={keys:<6} latest: p50 {:.2} ms  p99 {:.2} ms   at a past revision: p50 {:.2} ms  p99 {:.2} ms",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&past, 0.5)),
        ms(pct(&past, 0.99)),
    );
    store.close();
}

async fn watch_latency(dir: &tempfile::TempDir, watchers: usize, events: usize) {
    let store = open(dir, "watch.db");
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut w = store
            .watch(KeyRange::prefix(&b"/registry/pods/"[..]), 0)
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events);
            while lat.len() < events {
                match w.next().await {
                    Some(Ok(e)) => {
                        let sent: u64 = std::str::from_utf8(&e.kv.value[..20])
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        lat.push(epoch.elapsed().saturating_sub(Duration::from_nanos(sent)));
                    }
                    other => panic!("watch ended: {other:?}"),
                }
            }
            lat
        }));
    }
    let pad = "p".repeat(1000);
    for i in 0..events {
        let value = format!("{:>20}{pad}", epoch.elapsed().as_nanos());
        store
            .put(
                format!("/registry/pods/ns/p{}", i % 50).as_bytes(),
                Bytes::from(value),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    println!(
        "watch      watchers={watchers:<5} events={events:<4} delivery (submit -> received): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} deliveries)",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
        lat.len()
    );
    store.close();
}

fn main() {
    let quick = std::env::var("STORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(std::env::var("STORE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    println!(
        "capstan-store benchmark (SQLite, synchronous=FULL, WAL){}",
        if quick { " [quick]" } else { "" }
    );
    // STORE_BENCH_ONLY=writes64,range,... runs a subset (for profiling one figure).
    let only = std::env::var("STORE_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    rt.block_on(async {
        let scale = if quick { 10 } else { 1 };
        if run("writes1") {
            writes(&dir, 1, 2_000 / scale).await;
        }
        if run("writes8") {
            writes(&dir, 8, 20_000 / scale).await;
        }
        if run("writes64") {
            writes(&dir, 64, 50_000 / scale).await;
        }
        if run("range") {
            let runs = std::env::var("STORE_BENCH_RANGE_RUNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 5 } else { 30 });
            ranges(&dir, 10_000 / scale, runs).await;
        }
        if run("watch") {
            watch_latency(&dir, 1_000 / scale, if quick { 20 } else { 200 }).await;
        }
    });
}
