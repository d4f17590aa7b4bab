//! What every loop receives: the client, the options, and an Event recorder per controller
//! name.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

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
    /// First delay before a ReplicaSet/Deployment retries what the API refused, doubling
    /// per failure up to `replica_backoff_max` (upstream's workqueue rate limiter caps at
    /// 1000 s).
    pub replica_backoff_base: Duration,
    pub replica_backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identity: format!("capstan-{}", std::process::id()),
            lease_duration: Duration::from_secs(15),
            disabled: HashSet::new(),
            replica_backoff_base: Duration::from_secs(1),
            replica_backoff_max: Duration::from_secs(1000),
        }
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
}

impl Context {
    pub fn new(client: Client, opts: Options) -> Self {
        Context {
            client,
            opts,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
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

    /// An Event recorder reporting as `component` (upstream's names: `deployment-controller`,
    /// `job-controller` …).
    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder::new(self.client.clone(), component)
    }
}
