//! NetworkPolicy enforcement for this node's pods in its own nftables table
//! (`ip capstan-<instance>-policy`): watches policies, pods and namespaces, and after a few
//! quiet milliseconds applies the difference to the table (set elements, changed chains).

mod model;
mod table;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::{nft, NetfilterError};
pub use model::{pod_info, Desired, NamedPort, Objects, PodInfo};

/// How long a batch of changes collects after its first one.
const DEBOUNCE: Duration = Duration::from_millis(5);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The label upstream's API server puts on every namespace (selectors rely on it).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy table's name for an agent instance.
pub fn table_name(instance: &str) -> String {
    format!("{}-policy", super::table_name(instance))
}

/// Removes an agent instance's policy table; nothing happens when there is none.
pub async fn remove_table(instance: &str) -> Result<(), NetfilterError> {
    nft::apply(&table::delete_table(&table_name(instance))).await
}

/// Whether an agent instance's policy table exists.
pub async fn table_exists(instance: &str) -> bool {
    matches!(
        nft::list(&["table", super::ruleset::FAMILY, &table_name(instance)]).await,
        Ok(Some(_))
    )
}

/// The policy table and what it holds.
pub struct PolicyTable {
    name: String,
    programmed: Desired,
    /// The last transaction failed: the next one recreates the table whole.
    resync: bool,
}

impl PolicyTable {
    /// Creates the table afresh (a previous run's goes): nobody is isolated until the
    /// first `update`.
    pub async fn create(instance: &str) -> Result<PolicyTable, NetfilterError> {
        let name = table_name(instance);
        nft::apply(&table::create_table(&name)).await?;
        Ok(PolicyTable {
            name,
            programmed: Desired::empty(),
            resync: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the table hold `desired`; returns the transaction's line count. On failure the
    /// kernel is unchanged and the next update rebuilds the table in one transaction.
    pub async fn update(&mut self, desired: Desired) -> Result<usize, NetfilterError> {
        let text = if self.resync {
            let mut t = table::create_table(&self.name);
            t.push_str(&table::script(&self.name, &Desired::empty(), &desired));
            t
        } else {
            table::script(&self.name, &self.programmed, &desired)
        };
        if !text.is_empty() {
            if let Err(e) = nft::apply(&text).await {
                self.resync = true;
                return Err(e);
            }
        }
        self.resync = false;
        self.programmed = desired;
        Ok(text.lines().count())
    }
}

/// Runs until dropped (or at once when the table cannot be made: logged).
pub async fn run(client: kube::Client, node_name: String, instance: String) {
    let mut table = match PolicyTable::create(&instance).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "no NetworkPolicy table: policies are not enforced on this node");
            return;
        }
    };
    tracing::info!(table = %table.name(), "NetworkPolicy table created");
    // Packets between two pods of this node are bridged: only br_netfilter shows them to
    // the ip hooks the table filters in (`sysctl::prepare` turns it on when it can).
    let bridged = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if bridged.map(|v| v.trim() != "1").unwrap_or(true) {
        tracing::warn!(
            "br_netfilter is off: NetworkPolicies do not apply between pods of this node"
        );
    }
    let config = watcher::Config::default;
    let mut policies = capstan_slim::watcher(Api::<NetworkPolicy>::all(client.clone()), config())
        .default_backoff()
        .boxed();
    let mut pods = capstan_slim::watcher(Api::<Pod>::all(client.clone()), config())
        .default_backoff()
        .boxed();
    let mut namespaces = capstan_slim::watcher(Api::<Namespace>::all(client), config())
        .default_backoff()
        .boxed();
    let mut state = Watched::new(node_name);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            event = policies.next() => match event {
                None => return,
                Some(Ok(e)) => state.policy_event(e),
                Some(Err(e)) => tracing::warn!(error = %e, "watching NetworkPolicies failed; retrying with back-off"),
            },
            event = pods.next() => match event {
                None => return,
                Some(Ok(e)) => state.pod_event(e),
                Some(Err(e)) => tracing::warn!(error = %e, "watching Pods for policies failed; retrying with back-off"),
            },
            event = namespaces.next() => match event {
                None => return,
                Some(Ok(e)) => state.namespace_event(e),
                Some(Err(e)) => tracing::warn!(error = %e, "watching Namespaces for policies failed; retrying with back-off"),
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                let started = Instant::now();
                let waited = state.dirty_since.map(|t| started.duration_since(t)).unwrap_or_default();
                let desired = state.objects.desired();
                let computed = started.elapsed();
                match table.update(desired).await {
                    Ok(lines) => {
                        failures = 0;
                        state.dirty_since = None;
                        tracing::info!(
                            table = %table.name(),
                            policies = state.objects.policies.len(),
                            script_lines = lines,
                            compute_ms = computed.as_secs_f64() * 1000.0,
                            apply_ms = started.elapsed().as_secs_f64() * 1000.0,
                            // From the first change the watches delivered to the kernel.
                            latency_ms = (waited + started.elapsed()).as_secs_f64() * 1000.0,
                            "NetworkPolicy rules programmed"
                        );
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = RETRY_MIN.saturating_mul(1 << failures.min(6)).min(RETRY_MAX);
                        tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "programming NetworkPolicies failed");
                        deadline = Some(tokio::time::Instant::now() + delay);
                        continue;
                    }
                }
            },
        }
        if deadline.is_none() && state.ready() && state.dirty_since.is_some() {
            deadline = Some(tokio::time::Instant::now() + DEBOUNCE);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The watched objects and whether they changed since the table was last programmed.
struct Watched {
    node_name: String,
    objects: Objects,
    /// Relists in progress: objects collected until the watcher says the list is done.
    relisting_policies: Option<Vec<NetworkPolicy>>,
    relisting_pods: Option<Vec<Pod>>,
    relisting_namespaces: Option<Vec<Namespace>>,
    /// Which lists have completed once: before all three, a policy could admit too little.
    listed: [bool; 3],
    dirty_since: Option<Instant>,
}

impl Watched {
    fn new(node_name: String) -> Watched {
        Watched {
            node_name,
            objects: Objects::default(),
            relisting_policies: None,
            relisting_pods: None,
            relisting_namespaces: None,
            listed: [false; 3],
            dirty_since: None,
        }
    }

    fn ready(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    fn mark(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    fn policy_event(&mut self, event: Event<NetworkPolicy>) {
        match event {
            Event::Init => self.relisting_policies = Some(Vec::new()),
            Event::InitApply(p) => self.relisting_policies.get_or_insert_with(Vec::new).push(p),
            Event::InitDone => {
                self.objects.policies.clear();
                for p in self.relisting_policies.take().unwrap_or_default() {
                    self.apply_policy(p);
                }
                self.listed[0] = true;
                self.mark();
            }
            Event::Apply(p) => self.apply_policy(p),
            Event::Delete(p) => {
                if let Some(key) = model::policy_key(&p) {
                    self.objects.policies.remove(&key);
                    self.mark();
                }
            }
        }
    }

    fn apply_policy(&mut self, p: NetworkPolicy) {
        if let Some(key) = model::policy_key(&p) {
            let spec = p.spec.unwrap_or_default();
            if self.objects.policies.get(&key) != Some(&spec) {
                self.objects.policies.insert(key, spec);
                self.mark();
            }
        }
    }

    fn pod_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisting_pods = Some(Vec::new()),
            Event::InitApply(p) => self.relisting_pods.get_or_insert_with(Vec::new).push(p),
            Event::InitDone => {
                self.objects.pods.clear();
                for p in self.relisting_pods.take().unwrap_or_default() {
                    self.apply_pod(&p);
                }
                self.listed[1] = true;
                self.mark();
            }
            Event::Apply(p) => self.apply_pod(&p),
            Event::Delete(p) => {
                if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                    self.remove_pod(ns, name);
                }
            }
        }
    }

    fn remove_pod(&mut self, ns: &str, name: &str) {
        if let Some(pods) = self.objects.pods.get_mut(ns) {
            if pods.remove(name).is_some() {
                if pods.is_empty() {
                    self.objects.pods.remove(ns);
                }
                self.mark();
            }
        }
    }

    /// Only a change policies can see (address, labels, node, named ports) marks the
    /// table dirty: status updates of running pods cost nothing.
    fn apply_pod(&mut self, p: &Pod) {
        let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) else {
            return;
        };
        match model::pod_info(p, &self.node_name) {
            None => self.remove_pod(ns, name),
            Some(info) => {
                let pods = self.objects.pods.entry(ns.clone()).or_default();
                if pods.get(name) != Some(&info) {
                    pods.insert(name.clone(), info);
                    self.mark();
                }
            }
        }
    }

    fn namespace_event(&mut self, event: Event<Namespace>) {
        match event {
            Event::Init => self.relisting_namespaces = Some(Vec::new()),
            Event::InitApply(n) => self
                .relisting_namespaces
                .get_or_insert_with(Vec::new)
                .push(n),
            Event::InitDone => {
                self.objects.namespaces.clear();
                for n in self.relisting_namespaces.take().unwrap_or_default() {
                    self.apply_namespace(n);
                }
                self.listed[2] = true;
                self.mark();
            }
            Event::Apply(n) => self.apply_namespace(n),
            Event::Delete(n) => {
                if let Some(name) = &n.metadata.name {
                    if self.objects.namespaces.remove(name).is_some() {
                        self.mark();
                    }
                }
            }
        }
    }

    fn apply_namespace(&mut self, n: Namespace) {
        let Some(name) = n.metadata.name else {
            return;
        };
        let mut labels = n.metadata.labels.unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
        if self.objects.namespaces.get(&name) != Some(&labels) {
            self.objects.namespaces.insert(name, labels);
            self.mark();
        }
    }
}
