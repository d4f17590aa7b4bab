//! `capstan bench`: a load tool that measures any Kubernetes API server named by a
//! kubeconfig — capstan or kube-apiserver alike — with the same scenarios and figures.

pub mod client;
pub mod error;
pub mod kubeconfig;
pub mod report;
mod scenarios;
pub mod stats;

use std::path::PathBuf;
use std::time::Instant;

pub use error::BenchError;
pub use kubeconfig::Endpoint;
pub use report::{CaseResult, Check, Report};

/// Every scenario, in the order a full run takes them.
pub const SCENARIOS: &[&str] = &[
    "create",
    "get",
    "list",
    "update-contention",
    "watch-fanout",
    "startup",
    "schedule",
    "deployment",
];

/// Scenarios that need more than an API server (nodes, a scheduler): run only when named.
pub const ON_REQUEST: &[&str] = &["schedule", "deployment"];

#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    /// Empty: every scenario.
    pub scenarios: Vec<String>,
    /// Concurrent clients for create and get.
    pub clients: usize,
    /// Objects created (and then read and listed).
    pub count: usize,
    /// Repetitions of each list variant.
    pub list_runs: usize,
    /// `limit` of the paginated list variants.
    pub list_page: usize,
    pub contention_clients: usize,
    /// Successful read-modify-write updates, in total over all contention clients.
    pub updates: usize,
    pub watchers: usize,
    /// Objects written while the watchers watch.
    pub events: usize,
    /// Pause between two watched writes, so delivery latency is measured at a steady rate
    /// rather than behind a queue of the tool's own making.
    pub event_interval_ms: u64,
    pub startup_runs: usize,
    /// Pods the `schedule` scenario creates.
    pub pods: usize,
    /// `schedule` creates only plain pods (no spread, no anti-affinity): the ceiling of the
    /// create → bind → Running pipeline itself.
    pub plain_pods: bool,
    /// Replicas of the `deployment` scenario's Deployment.
    pub deployment_replicas: usize,
    /// The server's process id, when it runs on this machine: its RSS is reported.
    pub server_pid: Option<u32>,
    /// The capstan binary the `startup` scenario starts.
    pub capstan_binary: Option<PathBuf>,
}

impl Options {
    pub fn new(kubeconfig: PathBuf) -> Self {
        Options {
            kubeconfig,
            context: None,
            scenarios: Vec::new(),
            clients: 8,
            count: 2000,
            list_runs: 10,
            list_page: 500,
            contention_clients: 16,
            updates: 1000,
            watchers: 1000,
            events: 200,
            event_interval_ms: 20,
            startup_runs: 5,
            pods: 30_000,
            plain_pods: false,
            deployment_replicas: 1000,
            server_pid: None,
            capstan_binary: None,
        }
    }

    /// Small counts, for the test script: seconds, not minutes.
    pub fn quick(mut self) -> Self {
        self.count = 200;
        self.clients = 4;
        self.list_runs = 3;
        // Smaller than `count`, so the quick run pages through continue tokens too.
        self.list_page = 50;
        self.contention_clients = 4;
        self.updates = 200;
        self.watchers = 50;
        self.events = 50;
        self.event_interval_ms = 5;
        self.startup_runs = 2;
        self.pods = 300;
        self.deployment_replicas = 50;
        self
    }
}

/// Run the chosen scenarios, printing each case as it completes, and return the report.
/// The tool's namespace is deleted at the end even when a scenario failed.
pub async fn run(opts: Options) -> Result<Report, BenchError> {
    for s in &opts.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            return Err(BenchError::Config(format!(
                "unknown scenario {s:?}; known: {}",
                SCENARIOS.join(", ")
            )));
        }
    }
    let named = |name: &str| opts.scenarios.iter().any(|s| s == name);
    let wanted =
        |name: &str| named(name) || (opts.scenarios.is_empty() && !ON_REQUEST.contains(&name));
    let ep = Endpoint::from_kubeconfig(&opts.kubeconfig, opts.context.as_deref())?;
    let started = Instant::now();
    let cpu_before = stats::own_cpu_seconds();
    let server_version = scenarios::server_version(&ep).await.unwrap_or_default();
    let mut ctx = scenarios::Ctx::new(ep.clone(), opts.clone());
    println!("{}", report::header());
    let needs_namespace = SCENARIOS
        .iter()
        .filter(|s| **s != "startup")
        .any(|s| wanted(s));
    let mut result = Ok(());
    if needs_namespace {
        result = ctx.create_namespace().await;
        for name in SCENARIOS.iter().filter(|s| **s != "startup") {
            if result.is_err() {
                break;
            }
            if wanted(name) {
                result = ctx.run(name).await;
            }
        }
        ctx.delete_namespace().await;
    }
    if result.is_ok() && wanted("startup") {
        result = ctx.run("startup").await;
    }
    result?;
    let wall = started.elapsed().as_secs_f64();
    let ok = ctx.checks.iter().all(|c| c.ok);
    Ok(Report {
        server: ep.server.clone(),
        server_version,
        clients: opts.clients,
        count: opts.count,
        cases: ctx.cases,
        checks: ctx.checks,
        bench_cpu_seconds: ((stats::own_cpu_seconds() - cpu_before) * 100.0).round() / 100.0,
        wall_seconds: (wall * 100.0).round() / 100.0,
        ok,
    })
}
