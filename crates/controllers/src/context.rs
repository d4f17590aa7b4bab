//! What every loop receives: the client, the options, and an Event recorder per controller
//! name.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};

use crate::events::Recorder;
use crate::informers::Shared;

/// How the controllers run. Loops add the knobs they need here (with upstream's defaults).
#[derive(Debug, Clone)]
pub struct Options {
    /// Who holds the Lease (upstream: hostname plus a unique suffix).
    pub identity: String,
    /// The Lease's duration (upstream's `--leader-elect-lease-duration`, 15 s).
    pub lease_duration: Duration,
    /// Loops not to run, by upstream's controller name (`--controllers=-name`).
    pub disabled: HashSet<String>,
    /// Garbage collector workers (upstream's `--concurrent-gc-syncs`, 20).
    pub concurrent_gc_syncs: usize,
    /// First retry delay of the statefulset, daemonset and disruption loops after a failed
    /// sync (doubling to 5 minutes; upstream's workqueue rate limiter starts at 5 ms).
    pub sets_backoff_base: Duration,
    /// The Job controller's first delay before replacing failed pods, doubled per failure up
    /// to 6 min (upstream's DefaultJobPodFailureBackOff, 10 s; a flag for tests).
    pub job_pod_failure_backoff: Duration,
    /// The CronJob controller's clock, for tests: `now` is the real time shifted by
    /// `offset_seconds`, running `speed` times as fast from the moment the loop starts.
    pub cronjob_clock_offset_seconds: i64,
    pub cronjob_clock_speed: f64,
    /// First delay before a ReplicaSet/Deployment retries what the API refused, doubling
    /// per failure up to `replica_backoff_max` (upstream's workqueue rate limiter caps at
    /// 1000 s).
    pub replica_backoff_base: Duration,
    pub replica_backoff_max: Duration,
    /// The cluster CA (PEM) the root-CA publisher writes into every namespace as
    /// `kube-root-ca.crt` (upstream's `--root-ca-file`); nothing is published without it.
    pub root_ca_pem: Option<String>,
    /// How long a node's Lease may go unrenewed before it is Ready=Unknown (upstream's
    /// `--node-monitor-grace-period`, 50 s).
    pub node_monitor_grace_period: Duration,
    /// Terminated pods kept before the oldest are deleted (upstream's
    /// `--terminated-pod-gc-threshold`, 12500; 0 keeps them all).
    pub terminated_pod_gc_threshold: usize,
    /// Endpoints per EndpointSlice (upstream's `--max-endpoints-per-slice`, 100).
    pub max_endpoints_per_slice: usize,
    /// The CA the CSR signer issues from and the approver parses requests with (upstream's
    /// `--cluster-signing-cert-file`/`-key-file`); neither loop runs without it.
    pub cluster_signing_ca: Option<crate::certificates::Ca>,
    /// The longest certificate the signer issues (upstream's `--cluster-signing-duration`,
    /// a year).
    pub cluster_signing_duration: Duration,
    /// How long an Event is kept after it was last written (upstream's `--event-ttl`, 1 h).
    pub event_ttl: Duration,
    /// Where Nodes' pod CIDRs come from (upstream's `--allocate-node-cidrs` with
    /// `--cluster-cidr` and `--node-cidr-mask-size`); None: the node-ipam loop is idle.
    pub node_cidrs: Option<crate::nodeipam::Allocator>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            disabled: HashSet::new(),
            concurrent_gc_syncs: 20,
            sets_backoff_base: Duration::from_secs(1),
            job_pod_failure_backoff: Duration::from_secs(10),
            cronjob_clock_offset_seconds: 0,
            cronjob_clock_speed: 1.0,
            replica_backoff_base: Duration::from_secs(1),
            replica_backoff_max: Duration::from_secs(1000),
            root_ca_pem: None,
            node_monitor_grace_period: Duration::from_secs(50),
            terminated_pod_gc_threshold: 12500,
            max_endpoints_per_slice: 100,
            cluster_signing_ca: None,
            cluster_signing_duration: Duration::from_secs(365 * 24 * 3600),
            event_ttl: Duration::from_secs(3600),
            node_cidrs: None,
        }
    }
}

/// Upstream's `<hostname>_<uuid>`: unique across machines and restarts.
fn default_identity() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let host = read("/proc/sys/kernel/hostname");
    let uuid = read("/proc/sys/kernel/random/uuid");
    let host = if host.is_empty() {
        "capstan".into()
    } else {
        host
    };
    if uuid.is_empty() {
        format!("{host}_{}", std::process::id())
    } else {
        format!("{host}_{uuid}")
    }
}

impl Options {
    pub fn enabled(&self, name: &str) -> bool {
        !self.disabled.contains(name)
    }
}

/// Shared by the loops of one leadership term (dropped, with its informers, when the
/// term ends).
pub struct Context {
    pub client: Client,
    pub opts: Options,
    pods: OnceLock<Shared<Pod>>,
    nodes: OnceLock<Shared<Node>>,
    jobs: OnceLock<Shared<Job>>,
    admission_changes: OnceLock<crate::admission_changes::AdmissionChanges>,
    warm: tokio::sync::OnceCell<()>,
}

impl Context {
    pub fn new(client: Client, opts: Options) -> Self {
        Context {
            client,
            opts,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
            jobs: OnceLock::new(),
            admission_changes: OnceLock::new(),
            warm: tokio::sync::OnceCell::new(),
        }
    }

    /// Every pod in the cluster, watched once for all loops (started on first use).
    pub fn pods(&self) -> &Shared<Pod> {
        self.pods
            .get_or_init(|| Shared::start(Api::all(self.client.clone())))
    }

    /// Every node, watched once for all loops (started on first use).
    pub fn nodes(&self) -> &Shared<Node> {
        self.nodes
            .get_or_init(|| Shared::start(Api::all(self.client.clone())))
    }

    /// Start the shared informers and wait for their first lists, once per term; every loop
    /// awaits this before it starts (see `lib.rs::spawn_loops`).
    pub async fn warm(&self) {
        self.warm
            .get_or_init(|| async {
                self.pods().ready().await;
                self.nodes().ready().await;
                self.jobs().ready().await;
            })
            .await;
    }

    /// Every Job, watched once for the job, cronjob and ttl-after-finished loops.
    pub fn jobs(&self) -> &Shared<Job> {
        self.jobs
            .get_or_init(|| Shared::start(Api::all(self.client.clone())))
    }

    /// Changes to quotas, limit ranges and priority classes, watched once for every loop
    /// that holds refused creates (started on first use).
    pub fn admission_changes(&self) -> &crate::admission_changes::AdmissionChanges {
        self.admission_changes
            .get_or_init(|| crate::admission_changes::AdmissionChanges::start(self.client.clone()))
    }

    /// An Event recorder reporting as `component` (upstream's names: `deployment-controller`,
    /// `job-controller` …).
    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder::new(self.client.clone(), component)
    }
}
