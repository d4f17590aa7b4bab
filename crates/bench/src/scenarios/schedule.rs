//! `schedule`: P pods (a third plain, a third with topology spread, a third with required
//! anti-affinity) created by C clients on a cluster that has nodes and a scheduler. One watch
//! times each pod's binding and its Running status; reports bound pods per second, creation →
//! bound and creation → Running latency, and the server's RSS when its pid is known.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::{with_clients, Ctx};
use crate::client::Conn;
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::{rss_kib, Summary};

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    object: PodFields<'a>,
}

#[derive(Deserialize, Default)]
struct PodFields<'a> {
    #[serde(borrow, default)]
    metadata: Meta<'a>,
    #[serde(borrow, default)]
    spec: Spec<'a>,
    #[serde(borrow, default)]
    status: Status<'a>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct Spec<'a> {
    #[serde(borrow, default, rename = "nodeName")]
    node_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Status<'a> {
    #[serde(borrow, default)]
    phase: Option<Cow<'a, str>>,
}

/// What one watch event says about a `sched-NNNNNN` pod: (index, bound, running).
fn observe(line: &[u8]) -> Result<Option<(usize, bool, bool)>, String> {
    let ev: Event = serde_json::from_slice(line).map_err(|e| format!("bad event: {e}"))?;
    if ev.kind == "ERROR" {
        return Err(format!("ERROR event: {}", String::from_utf8_lossy(line)));
    }
    if ev.kind != "ADDED" && ev.kind != "MODIFIED" {
        return Ok(None);
    }
    let Some(i) = ev
        .object
        .metadata
        .name
        .strip_prefix("sched-")
        .and_then(|i| i.parse().ok())
    else {
        return Ok(None);
    };
    let bound = ev.object.spec.node_name.is_some_and(|n| !n.is_empty());
    let running = ev.object.status.phase.as_deref() == Some("Running");
    Ok(Some((i, bound, running)))
}

/// The pod body for index `i`: plain, spread over hostnames, or anti-affine within a group
/// of at most `nodes` pods (so every group fits, one pod per node); only plain with `plain`.
fn pod_body(i: usize, nodes: usize, plain: bool) -> String {
    let (labels, extra) = match if plain { 0 } else { i % 3 } {
        0 => (r#""bench":"schedule","kind":"plain""#.to_string(), String::new()),
        1 => (
            r#""bench":"schedule","kind":"spread""#.to_string(),
            r#","topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"kind":"spread"}}}]"#.to_string(),
        ),
        _ => {
            let group = (i / 3) / nodes.max(1);
            (
                format!(r#""bench":"schedule","kind":"anti","group":"g{group}""#),
                format!(
                    r#","affinity":{{"podAntiAffinity":{{"requiredDuringSchedulingIgnoredDuringExecution":[{{"topologyKey":"kubernetes.io/hostname","labelSelector":{{"matchLabels":{{"group":"g{group}"}}}}}}]}}}}"#
                ),
            )
        }
    };
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"sched-{i:06}","labels":{{{labels}}}}},"spec":{{"terminationGracePeriodSeconds":0,"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]{extra}}}}}"#
    )
}

async fn ready_nodes(conn: &mut Conn) -> Result<usize, BenchError> {
    let path = "/api/v1/nodes";
    let body = conn.get(path).await?.ok(&Method::GET, path)?;
    let list: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|n| {
                    n["spec"]["unschedulable"] != true
                        && n["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .count()
        })
        .unwrap_or(0))
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let p = ctx.opts.pods.max(1);
    let mut conn = Conn::open(&ctx.ep).await?;
    let nodes = ready_nodes(&mut conn).await?;
    if nodes == 0 {
        return Err(BenchError::Config(
            "schedule needs Ready nodes and a scheduler (e.g. capstan server --simulated-nodes 1000)".into(),
        ));
    }
    let collection = format!("/api/v1/namespaces/{}/pods", ctx.ns);
    let list_path = format!("{collection}?limit=1");
    let body = conn.get(&list_path).await?.ok(&Method::GET, &list_path)?;
    let list: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Nanoseconds since `base` (0: not yet) for each pod's creation, binding and Running.
    let base = Instant::now();
    let created: Arc<Vec<AtomicU64>> = Arc::new((0..p).map(|_| AtomicU64::new(0)).collect());
    let bound: Arc<Vec<AtomicU64>> = Arc::new((0..p).map(|_| AtomicU64::new(0)).collect());
    let running: Arc<Vec<AtomicU64>> = Arc::new((0..p).map(|_| AtomicU64::new(0)).collect());
    let running_count = Arc::new(AtomicUsize::new(0));
    let mut watch_conn = Conn::open(&ctx.ep).await?;
    let watch_path = format!("{collection}?watch=1&resourceVersion={rv}&timeoutSeconds=3600");
    let mut stream = watch_conn.stream(&watch_path).await?;
    let watcher = {
        let (bound, running, running_count) =
            (bound.clone(), running.clone(), running_count.clone());
        tokio::spawn(async move {
            let _conn = watch_conn;
            loop {
                match stream.next_line().await {
                    Ok(Some(line)) => match observe(line) {
                        Ok(Some((i, b, r))) if i < p => {
                            let at = base.elapsed().as_nanos().max(1) as u64;
                            if b {
                                let _ = bound[i].compare_exchange(
                                    0,
                                    at,
                                    Ordering::AcqRel,
                                    Ordering::Acquire,
                                );
                            }
                            if r && running[i]
                                .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire)
                                .is_ok()
                            {
                                running_count.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => return Some(e),
                    },
                    Ok(None) => return Some("the server ended the watch".to_string()),
                    Err(e) => return Some(e.to_string()),
                }
            }
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let plain = ctx.opts.plain_pods;
    let path: Arc<str> = collection.clone().into();
    let (create_took, _) = with_clients(&ctx.ep, ctx.opts.clients, |_, mut conn| {
        let (next, path, created) = (next.clone(), path.clone(), created.clone());
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= p {
                    return Ok(());
                }
                created[i].store(base.elapsed().as_nanos().max(1) as u64, Ordering::Release);
                let reply = conn
                    .send_json(Method::POST, &path, Bytes::from(pod_body(i, nodes, plain)))
                    .await?;
                if reply.status != StatusCode::CREATED {
                    return Err(reply.unexpected(&Method::POST, &path));
                }
            }
        }
    })
    .await?;

    // Every pod should run within a minute of the last creation (plus a second per 1,000).
    let deadline = Instant::now() + Duration::from_secs(60 + p as u64 / 1000);
    while running_count.load(Ordering::Acquire) < p
        && Instant::now() < deadline
        && !watcher.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let watch_error = if watcher.is_finished() {
        watcher.await.ok().flatten()
    } else {
        watcher.abort();
        None
    };

    let load =
        |v: &Vec<AtomicU64>| -> Vec<u64> { v.iter().map(|a| a.load(Ordering::Acquire)).collect() };
    let (created, bound, running) = (load(&created), load(&bound), load(&running));
    let since = |to: &[u64]| -> Vec<Duration> {
        created
            .iter()
            .zip(to)
            .filter(|(_, t)| **t > 0)
            .map(|(c, t)| Duration::from_nanos(t.saturating_sub(*c)))
            .collect()
    };
    let bound_n = bound.iter().filter(|t| **t > 0).count();
    let running_n = running.iter().filter(|t| **t > 0).count();
    let first = created
        .iter()
        .copied()
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let last_bound = bound.iter().copied().max().unwrap_or(0);
    let last_running = running.iter().copied().max().unwrap_or(0);
    let secs = |ns: u64| (ns as f64 / 1e9).max(1e-9);
    let case = format!(
        "pods={p}{} nodes={nodes} c={}",
        if plain { " plain" } else { "" },
        ctx.opts.clients
    );
    ctx.record(
        CaseResult::new("schedule", &format!("created→bound {case}"), bound_n as u64)
            .rate(bound_n as f64 / secs(last_bound.saturating_sub(first)))
            .latency(Summary::of(since(&bound)))
            .figure(
                "create_per_second",
                (p as f64 / create_took.as_secs_f64() * 10.0).round() / 10.0,
            ),
    );
    let mut run_case = CaseResult::new(
        "schedule",
        &format!("created→Running {case}"),
        running_n as u64,
    )
    .rate(running_n as f64 / secs(last_running.saturating_sub(first)))
    .latency(Summary::of(since(&running)))
    .figure(
        "all_running_seconds",
        (secs(last_running.saturating_sub(first)) * 100.0).round() / 100.0,
    );
    if let Some(kib) = ctx.opts.server_pid.and_then(rss_kib) {
        run_case = run_case.figure("server_rss_kib", kib as f64);
    }
    ctx.record(run_case);
    ctx.check(
        "schedule",
        "every pod bound and Running",
        bound_n == p && running_n == p && watch_error.is_none(),
        format!(
            "{bound_n} of {p} bound, {running_n} Running{}",
            watch_error
                .map(|e| format!(", watch: {e}"))
                .unwrap_or_default()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_bound_and_running() {
        let ev = br#"{"type":"MODIFIED","object":{"metadata":{"name":"sched-000007"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}}}"#;
        assert_eq!(observe(ev), Ok(Some((7, true, true))));
        let ev = br#"{"type":"ADDED","object":{"metadata":{"name":"sched-000008"},"spec":{},"status":{"phase":"Pending"}}}"#;
        assert_eq!(observe(ev), Ok(Some((8, false, false))));
        let other = br#"{"type":"ADDED","object":{"metadata":{"name":"web"}}}"#;
        assert_eq!(observe(other), Ok(None));
        assert!(observe(br#"{"type":"ERROR","object":{"code":410}}"#).is_err());
    }

    #[test]
    fn pod_bodies_are_valid_json_of_three_kinds() {
        for i in 0..6 {
            let v: serde_json::Value = serde_json::from_str(&pod_body(i, 2, false)).unwrap();
            assert_eq!(v["metadata"]["name"], format!("sched-{i:06}"));
        }
        let anti: serde_json::Value = serde_json::from_str(&pod_body(8, 2, false)).unwrap();
        assert_eq!(anti["metadata"]["labels"]["group"], "g1");
        let spread: serde_json::Value = serde_json::from_str(&pod_body(1, 2, false)).unwrap();
        assert_eq!(spread["spec"]["topologySpreadConstraints"][0]["maxSkew"], 1);
        let plain: serde_json::Value = serde_json::from_str(&pod_body(1, 2, true)).unwrap();
        assert_eq!(plain["metadata"]["labels"]["kind"], "plain");
        assert!(plain["spec"].get("topologySpreadConstraints").is_none());
    }
}
