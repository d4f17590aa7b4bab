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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identity: format!("capstan-{}", std::process::id()),
            lease_duration: Duration::from_secs(15),
            disabled: HashSet::new(),
            root_ca_pem: None,
            node_monitor_grace_period: Duration::from_secs(50),
            terminated_pod_gc_threshold: 12500,
            max_endpoints_per_slice: 100,
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
