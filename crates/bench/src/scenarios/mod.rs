//! The scenarios and what they share: the tool's namespace, the seeded ConfigMaps, and a
//! way to run C clients, each on its own connection, against one clock.

mod contention;
mod create;
mod deployment;
mod get;
mod list;
mod schedule;
mod startup;
mod watch_fanout;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;

use crate::client::Conn;
use crate::error::BenchError;
use crate::kubeconfig::Endpoint;
use crate::report::{case_line, CaseResult, Check};
use crate::stats::rss_kib;
use crate::Options;

pub struct Ctx {
    pub ep: Endpoint,
    pub opts: Options,
    pub ns: String,
    /// ConfigMaps `bench-000000…` present in the namespace (made by `create`, or seeded).
    pub seeded: usize,
    pub cases: Vec<CaseResult>,
    pub checks: Vec<Check>,
}

impl Ctx {
    pub fn new(ep: Endpoint, opts: Options) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Ctx {
            ep,
            opts,
            ns: format!("capstan-bench-{}-{nanos:x}", std::process::id()),
            seeded: 0,
            cases: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub async fn run(&mut self, name: &str) -> Result<(), BenchError> {
        match name {
            "create" => create::run(self).await,
            "get" => get::run(self).await,
            "list" => list::run(self).await,
            "update-contention" => contention::run(self).await,
            "watch-fanout" => watch_fanout::run(self).await,
            "startup" => startup::run(self).await,
            "schedule" => schedule::run(self).await,
            "deployment" => deployment::run(self).await,
            other => Err(BenchError::Config(format!("unknown scenario {other:?}"))),
        }
    }

    pub fn record(&mut self, case: CaseResult) {
        println!("{}", case_line(&case));
        self.cases.push(case);
    }

    pub fn check(&mut self, scenario: &str, name: &str, ok: bool, detail: String) {
        println!(
            "check {:<8} {scenario:<18} {name:<26} {detail}",
            if ok { "ok" } else { "FAILED" }
        );
        self.checks.push(Check {
            scenario: scenario.into(),
            name: name.into(),
            ok,
            detail,
        });
    }

    pub fn configmaps(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.ns)
    }

    pub async fn create_namespace(&self) -> Result<(), BenchError> {
        let mut conn = Conn::open(&self.ep).await?;
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{}","labels":{{"app.kubernetes.io/managed-by":"capstan-bench"}}}}}}"#,
            self.ns
        );
        conn.send_json(Method::POST, "/api/v1/namespaces", Bytes::from(body))
            .await?
            .ok(&Method::POST, "/api/v1/namespaces")?;
        Ok(())
    }

    pub async fn delete_namespace(&mut self) {
        let path = format!("/api/v1/namespaces/{}", self.ns);
        let mut conn = match Conn::open(&self.ep).await {
            Ok(conn) => conn,
            Err(e) => return eprintln!("capstan bench: deleting namespace {}: {e}", self.ns),
        };
        let started = Instant::now();
        if let Err(e) = conn.request(Method::DELETE, &path, None).await {
            return eprintln!("capstan bench: deleting namespace {}: {e}", self.ns);
        }
        // With the server's pid known, the deletion is measured too: until the namespace is
        // gone (everything in it deleted by the server's controllers), with the server's
        // largest RSS on the way — emptying a big namespace is where memory peaks.
        let Some(pid) = self.opts.server_pid else {
            return;
        };
        let mut peak = rss_kib(pid).unwrap_or(0);
        let deadline = started + Duration::from_secs(120);
        let gone = loop {
            match conn.request(Method::GET, &path, None).await {
                Ok(r) if r.status == hyper::StatusCode::NOT_FOUND => break true,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("capstan bench: reading namespace {}: {e}", self.ns);
                    break false;
                }
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss_kib(pid).unwrap_or(0));
        };
        let took = started.elapsed();
        self.record(
            CaseResult::new("cleanup", "namespace deleted", 1)
                .figure("seconds", (took.as_secs_f64() * 100.0).round() / 100.0)
                .figure("server_peak_rss_kib", peak as f64),
        );
        self.check(
            "cleanup",
            "namespace deleted",
            gone,
            format!("within {:.1} s", took.as_secs_f64()),
        );
    }

    /// Make sure `bench-*` objects exist for the read scenarios when `create` did not run.
    pub async fn ensure_seeded(&mut self) -> Result<(), BenchError> {
        if self.seeded < self.opts.count {
            let path = self.configmaps();
            create::create_objects(&self.ep, &path, "bench", self.opts.count, self.opts.clients)
                .await?;
            self.seeded = self.opts.count;
        }
        Ok(())
    }
}

/// Open `clients` connections, then start the clock and run `f(client_index, conn)` on each
/// concurrently. Returns the wall time from the start to the last finish and each result.
pub async fn with_clients<T, F, Fut>(
    ep: &Endpoint,
    clients: usize,
    f: F,
) -> Result<(Duration, Vec<T>), BenchError>
where
    T: Send + 'static,
    F: Fn(usize, Conn) -> Fut,
    Fut: Future<Output = Result<T, BenchError>> + Send + 'static,
{
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        conns.push(Conn::open(ep).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(f(i, c)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| BenchError::Scenario(format!("client task failed: {e}")))??,
        );
    }
    Ok((start.elapsed(), out))
}

pub async fn server_version(ep: &Endpoint) -> Result<String, BenchError> {
    let mut conn = Conn::open(ep).await?;
    let body = conn.get("/version").await?.ok(&Method::GET, "/version")?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::Http(e.to_string()))?;
    Ok(v["gitVersion"].as_str().unwrap_or_default().to_string())
}

/// A small, fast, seedable generator: the tool's randomness must not cost what it measures.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}
