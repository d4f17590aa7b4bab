//! `startup` (capstan only): a fresh data dir to `/readyz` answering ok, repeated; then the
//! last server's resident memory when idle and after the `create` workload, from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::{create, Ctx};
use crate::client::Conn;
use crate::error::BenchError;
use crate::kubeconfig::Endpoint;
use crate::report::CaseResult;
use crate::stats::{rss_kib, Summary};

/// Kills the server however the scenario ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(ctx: &Ctx) -> Result<PathBuf, BenchError> {
    if let Some(b) = &ctx.opts.capstan_binary {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Config(format!("finding the capstan binary: {e}")))?;
    match exe.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("capstan") && !n.contains('-') => Ok(exe),
        _ => Err(BenchError::Config(
            "the startup scenario needs the capstan binary (--capstan-binary)".into(),
        )),
    }
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Scenario(format!("no free port: {e}")))
}

/// Start a server on an empty data dir and wait until `/readyz` says ok; the time is from
/// just before the process is spawned.
async fn start(bin: &Path, dir: &Path) -> Result<(Server, Endpoint, Duration), BenchError> {
    let port = free_port()?;
    let t = Instant::now();
    let child = Command::new(bin)
        .arg("server")
        // The API server's start, comparable run to run; a node agent would also need root
        // and leave a bridge and packet rules behind when the run kills it.
        .arg("--no-agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("CAPSTAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Scenario(format!("starting {}: {e}", bin.display())))?;
    let mut server = Server(child);
    let kubeconfig = dir.join("kubeconfig");
    let give_up = t + Duration::from_secs(30);
    loop {
        if Instant::now() > give_up {
            return Err(BenchError::Scenario("capstan not ready after 30 s".into()));
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(BenchError::Scenario(format!("capstan exited: {status}")));
        }
        // The kubeconfig (with the fresh CA) is written before the server starts serving.
        if let Ok(ep) = Endpoint::from_kubeconfig(&kubeconfig, None) {
            if let Ok(mut conn) = Conn::open(&ep).await {
                if let Ok(r) = conn.get("/readyz").await {
                    if r.status == StatusCode::OK {
                        return Ok((server, ep, t.elapsed()));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    let bin = binary(ctx)?;
    let runs = ctx.opts.startup_runs.max(1);
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for i in 0..runs {
        let dir =
            tempfile::tempdir().map_err(|e| BenchError::Scenario(format!("temporary dir: {e}")))?;
        let (server, ep, took) = start(&bin, dir.path()).await?;
        times.push(took);
        if i + 1 == runs {
            last = Some((server, ep, dir));
        }
    }
    ctx.record(
        CaseResult::new("startup", "empty data dir -> readyz", runs as u64)
            .latency(Summary::of(times)),
    );
    let Some((server, ep, _dir)) = last else {
        return Ok(());
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.0.id();
    let idle = rss_kib(pid).unwrap_or(0);
    let n = ctx.opts.count;
    create::create_objects(
        &ep,
        "/api/v1/namespaces/default/configmaps",
        "bench",
        n,
        ctx.opts.clients,
    )
    .await?;
    let loaded = rss_kib(pid).unwrap_or(0);
    ctx.record(
        CaseResult::new("startup", "server RSS", 1)
            .figure("idle_kib", idle as f64)
            .figure(&format!("after_create_{n}_kib"), loaded as f64),
    );
    Ok(())
}
