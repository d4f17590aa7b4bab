//! `deployment`: one Deployment of R replicas on a cluster with nodes, a scheduler and the
//! controllers: time until all are Available, then a rolling update (maxSurge 25%) timed to
//! completion, with the peak number of live pods one pod watch saw.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use super::Ctx;
use crate::client::Conn;
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::rss_kib;

fn deployment_body(replicas: usize) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench-web"},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "bench-web"}},
            "template": {"metadata": {"labels": {"app": "bench-web"}},
                         "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                             "name": "app", "image": "registry.k8s.io/pause:3.10",
                             "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    })
    .to_string()
}

/// Poll the Deployment until its rollout is complete (kubectl rollout status's test).
async fn wait_complete(
    conn: &mut Conn,
    path: &str,
    replicas: usize,
    within: Duration,
) -> Result<bool, BenchError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let body = conn.get(path).await?.ok(&Method::GET, path)?;
        let d: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
        let st = &d["status"];
        let n = |f: &str| st[f].as_u64().unwrap_or(0) as usize;
        if st["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
            && n("updatedReplicas") == replicas
            && n("replicas") == replicas
            && n("availableReplicas") == replicas
        {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let r = ctx.opts.deployment_replicas.max(1);
    let mut conn = Conn::open(&ctx.ep).await?;
    let pods = format!("/api/v1/namespaces/{}/pods", ctx.ns);
    let list_path = format!("{pods}?limit=1");
    let body = conn.get(&list_path).await?.ok(&Method::GET, &list_path)?;
    let list: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Live pods (not terminating) and the most seen at once.
    let live: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut watch_conn = Conn::open(&ctx.ep).await?;
    let mut stream = watch_conn
        .stream(&format!(
            "{pods}?watch=1&resourceVersion={rv}&timeoutSeconds=3600"
        ))
        .await?;
    let watcher = {
        let (live, peak) = (live.clone(), peak.clone());
        tokio::spawn(async move {
            let _conn = watch_conn;
            while let Ok(Some(line)) = stream.next_line().await {
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                let name = ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let gone = ev["type"] == "DELETED"
                    || !ev["object"]["metadata"]["deletionTimestamp"].is_null()
                    || matches!(
                        ev["object"]["status"]["phase"].as_str(),
                        Some("Succeeded" | "Failed")
                    );
                let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                if gone {
                    l.remove(&name);
                } else {
                    l.insert(name);
                }
                peak.fetch_max(l.len(), Ordering::AcqRel);
            }
        })
    };

    let collection = format!("/apis/apps/v1/namespaces/{}/deployments", ctx.ns);
    let path = format!("{collection}/bench-web");
    let within = Duration::from_secs(120 + r as u64 / 10);
    let started = Instant::now();
    conn.send_json(Method::POST, &collection, Bytes::from(deployment_body(r)))
        .await?
        .ok(&Method::POST, &collection)?;
    let available = wait_complete(&mut conn, &path, r, within).await?;
    let create_took = started.elapsed();
    let peak_initial = peak.load(Ordering::Acquire);
    peak.store(live.lock().map(|l| l.len()).unwrap_or(0), Ordering::Release);

    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9"}]}}}}"#;
    let started = Instant::now();
    let reply = conn
        .request(
            Method::PATCH,
            &path,
            Some((Bytes::from(patch), "application/strategic-merge-patch+json")),
        )
        .await?;
    reply.ok(&Method::PATCH, &path)?;
    let rolled = available && wait_complete(&mut conn, &path, r, within).await?;
    let roll_took = started.elapsed();
    watcher.abort();
    let peak_rollout = peak.load(Ordering::Acquire);
    let surge = r.div_ceil(4);

    let round = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    let mut case = CaseResult::new(
        "deployment",
        &format!("create→all Available replicas={r}"),
        r as u64,
    )
    .rate(r as f64 / create_took.as_secs_f64().max(1e-9))
    .figure("all_available_seconds", round(create_took))
    .figure("peak_pods", peak_initial as f64);
    if let Some(kib) = ctx.opts.server_pid.and_then(rss_kib) {
        case = case.figure("server_rss_kib", kib as f64);
    }
    ctx.record(case);
    ctx.record(
        CaseResult::new(
            "deployment",
            &format!("rolling update maxSurge=25% replicas={r}"),
            r as u64,
        )
        .rate(r as f64 / roll_took.as_secs_f64().max(1e-9))
        .figure("rollout_seconds", round(roll_took))
        .figure("peak_pods", peak_rollout as f64),
    );
    ctx.check(
        "deployment",
        "available, rolled out",
        available && rolled,
        format!("available: {available}, rolled out: {rolled}"),
    );
    ctx.check(
        "deployment",
        "peak within maxSurge",
        peak_rollout <= r + surge,
        format!("peak {peak_rollout} live pods, limit {}", r + surge),
    );
    let _ = conn.request(Method::DELETE, &path, None).await;
    Ok(())
}
