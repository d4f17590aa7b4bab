//! What every loop receives: its own client (its identity), the options, the informers its
//! leadership term shares, and an Event recorder per controller name.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};

use crate::cached_pod::Pod;
use capstan_slim::WatchApi;
use kube::api::PostParams;
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
    /// `kube-root-ca.crt` (upstream's `--root-ca-file`, else the CA of the controller-manager's kubeconfig);
    /// nothing is published without one.
    pub root_ca_pem: Option<String>,
    /// How long a node's Lease may go unrenewed before it is Ready=Unknown (upstream's
    /// `--node-monitor-grace-period`, 50 s).
    pub node_monitor_grace_period: Duration,
    /// How fast NoExecute taints go on nodes that stopped, per zone (upstream's
    /// `--node-eviction-rate` and its zone-disruption flags).
    pub node_eviction: crate::node_lifecycle::EvictionLimits,
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
            node_eviction: Default::default(),
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
pub fn default_identity() -> String {
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

/// Whom a loop's own requests are made as (upstream's `--use-service-account-credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The ServiceAccount `kube-system/<name>` bound to `system:controller:<name>`.
    ServiceAccount(&'static str),
    /// A loop upstream runs inside kube-apiserver (its loopback identity).
    ApiServer,
}

/// Who a per-loop client acts as: an identity, and for a ServiceAccount its uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopUser {
    ServiceAccount { name: String, uid: String },
    ApiServer,
}

/// Makes a client acting as a `LoopUser`.
pub type ClientFor = Arc<dyn Fn(LoopUser) -> Client + Send + Sync>;

/// How the loops get their clients.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Every loop uses the controller-manager's own client (a kubeconfig's one identity).
    #[default]
    Shared,
    /// A client per loop identity; the ServiceAccounts are created in kube-system with the
    /// controller-manager's client first, as upstream's client builder does.
    PerLoop(ClientFor),
}

/// Where the controller-manager creates its loops' ServiceAccounts.
pub const SERVICE_ACCOUNT_NAMESPACE: &str = "kube-system";

/// Shared by the loops of one leadership term (dropped, with its informers, when the
/// term ends): the controller-manager's client, which the shared informers watch with (as
/// upstream's shared informers use the controller-manager's own credentials).
pub struct Term {
    client: Client,
    credentials: Credentials,
    pub opts: Options,
    pods: OnceLock<Shared<Pod>>,
    nodes: OnceLock<Shared<Node>>,
    jobs: OnceLock<Shared<Job>>,
    admission_changes: OnceLock<crate::admission_changes::AdmissionChanges>,
    warm: tokio::sync::OnceCell<()>,
}

impl Term {
    pub fn new(client: Client, credentials: Credentials, opts: Options) -> Self {
        Term {
            client,
            credentials,
            opts,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
            jobs: OnceLock::new(),
            admission_changes: OnceLock::new(),
            warm: tokio::sync::OnceCell::new(),
        }
    }

    /// The context of a loop acting as `identity`: its ServiceAccount made first if missing
    /// (retried with back-off until the API answers; the loop cannot work without it).
    pub async fn context_for(self: &Arc<Self>, identity: Identity) -> Context {
        let client = match (&self.credentials, identity) {
            (Credentials::Shared, _) => self.client.clone(),
            (Credentials::PerLoop(make), Identity::ApiServer) => make(LoopUser::ApiServer),
            (Credentials::PerLoop(make), Identity::ServiceAccount(name)) => {
                let uid = self.ensure_service_account(name).await;
                make(LoopUser::ServiceAccount {
                    name: name.to_string(),
                    uid,
                })
            }
        };
        Context {
            client,
            opts: self.opts.clone(),
            term: self.clone(),
        }
    }

    /// The uid of `kube-system/<name>`, created if missing.
    async fn ensure_service_account(&self, name: &str) -> String {
        let api: Api<ServiceAccount> =
            Api::namespaced(self.client.clone(), SERVICE_ACCOUNT_NAMESPACE);
        let mut delay = Duration::from_millis(100);
        loop {
            let found = match api.get_opt(name).await {
                Ok(Some(sa)) => Ok(sa),
                Ok(None) => {
                    let sa = ServiceAccount {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.to_string()),
                            namespace: Some(SERVICE_ACCOUNT_NAMESPACE.to_string()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &sa).await
                }
                Err(e) => Err(e),
            };
            match found {
                Ok(sa) => return sa.metadata.uid.unwrap_or_default(),
                // Another loop of the same account created it meanwhile: read it.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(verb = "create", resource = "serviceaccounts", namespace = SERVICE_ACCOUNT_NAMESPACE, name, error = %e, "controller service account unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn pods(&self) -> &Shared<Pod> {
        self.pods.get_or_init(|| {
            Shared::start_indexed(
                WatchApi::all(self.client.clone()),
                crate::pods::trim_for_cache,
            )
        })
    }

    fn nodes(&self) -> &Shared<Node> {
        self.nodes
            .get_or_init(|| Shared::start(WatchApi::all(self.client.clone())))
    }

    fn jobs(&self) -> &Shared<Job> {
        self.jobs
            .get_or_init(|| Shared::start(WatchApi::all(self.client.clone())))
    }

    async fn warm(&self) {
        self.warm
            .get_or_init(|| async {
                self.pods().ready().await;
                self.nodes().ready().await;
                self.jobs().ready().await;
            })
            .await;
    }
}

/// What one loop receives: `client` acts as the loop's own identity (its requests and its
/// own watches); the shared informers belong to the term.
pub struct Context {
    pub client: Client,
    pub opts: Options,
    term: Arc<Term>,
}

impl Context {
    /// The controller-manager's own client (`system:kube-controller-manager` in-process): what
    /// upstream's shared informers list and watch with, for watches beyond a loop's role.
    pub fn informer_client(&self) -> Client {
        self.term.client.clone()
    }

    /// Every pod in the cluster, watched once for all loops (started on first use).
    pub fn pods(&self) -> &Shared<Pod> {
        self.term.pods()
    }

    /// Every node, watched once for all loops (started on first use).
    pub fn nodes(&self) -> &Shared<Node> {
        self.term.nodes()
    }

    /// Start the shared informers and wait for their first lists, once per term; every loop
    /// awaits this before it starts (see `lib.rs::spawn_loops`).
    pub async fn warm(&self) {
        self.term.warm().await
    }

    /// Every Job, watched once for the job, cronjob and ttl-after-finished loops.
    pub fn jobs(&self) -> &Shared<Job> {
        self.term.jobs()
    }

    /// Changes to quotas, limit ranges and priority classes, watched once for every loop
    /// that holds refused creates (started on first use).
    pub fn admission_changes(&self) -> &crate::admission_changes::AdmissionChanges {
        self.term.admission_changes.get_or_init(|| {
            crate::admission_changes::AdmissionChanges::start(self.term.client.clone())
        })
    }

    /// An Event recorder reporting as `component` (upstream's names: `deployment-controller`,
    /// `job-controller` …), writing with the loop's own client.
    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder::new(self.client.clone(), component)
    }
}
