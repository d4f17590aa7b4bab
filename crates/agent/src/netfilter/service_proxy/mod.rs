//! The Service proxy (kube-proxy's job, nftables mode): watches Services and EndpointSlices,
//! and after a few quiet milliseconds programs what changed since the last batch — only the
//! touched Services' chains, sets and map elements — in one `nft` transaction.

mod conntrack;
mod model;
mod rules;
mod transaction;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::Netfilter;
pub use model::{proxied_ports, PortKey, ProxiedPort};
pub use rules::{port_rules, PortRules};
pub use transaction::{clear, script, Change};

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How long a batch of changes collects after its first one.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Retry delays after a rejected transaction.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// `namespace/name` of a Service.
type ServiceRef = (String, String);

/// Runs until dropped.
pub async fn run(client: kube::Client, node_name: String, netfilter: Arc<Netfilter>) {
    // Its own Service watch, not the shared cache's: the proxy needs to know which Service
    // changed, the cache only says that one did.
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client);
    let mut services = capstan_slim::watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut slices = capstan_slim::watcher(
        slices,
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff()
    .boxed();
    let mut proxy = Proxy::new(node_name, netfilter);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            event = services.next() => match event {
                None => return,
                Some(Ok(e)) => proxy.service_event(e),
                Some(Err(e)) => tracing::warn!(error = %e, "watching Services failed; retrying with back-off"),
            },
            event = slices.next() => match event {
                None => return,
                Some(Ok(e)) => proxy.slice_event(e),
                Some(Err(e)) => tracing::warn!(error = %e, "watching EndpointSlices failed; retrying with back-off"),
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                match proxy.sync().await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        let delay = RETRY_MIN
                            .saturating_mul(1 << failures.min(6))
                            .min(RETRY_MAX);
                        tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "programming Services failed");
                        deadline = Some(tokio::time::Instant::now() + delay);
                        continue;
                    }
                }
            },
        }
        if deadline.is_none() && proxy.ready() && proxy.pending() {
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

/// The watched objects, what the table holds, and which Services changed since.
struct Proxy {
    node_name: String,
    netfilter: Arc<Netfilter>,
    services: HashMap<ServiceRef, Service>,
    /// Per Service, its slices by name.
    slices: HashMap<ServiceRef, BTreeMap<String, EndpointSlice>>,
    /// A slice's Service (its label may change).
    slice_owner: HashMap<(String, String), ServiceRef>,
    /// Relists in progress: objects collected until the watcher says the list is done.
    relisting_services: Option<Vec<Service>>,
    relisting_slices: Option<Vec<EndpointSlice>>,
    services_listed: bool,
    slices_listed: bool,
    dirty: BTreeSet<ServiceRef>,
    /// When the oldest unprogrammed change arrived.
    dirty_since: Option<Instant>,
    programmed: BTreeMap<PortKey, PortRules>,
    ports_of: HashMap<ServiceRef, BTreeSet<PortKey>>,
    /// Which port holds each map key: Services may claim the same external address and
    /// port, and a map key can only lead one way.
    element_owner: HashMap<(rules::MapName, rules::ElementKey), PortKey>,
    /// The last transaction failed: the next one starts from a cleared slate.
    resync: bool,
    /// UDP ports' frontends and endpoints as programmed: what a change leaves stale.
    udp_flows: BTreeMap<PortKey, conntrack::UdpFlow>,
}

impl Proxy {
    fn new(node_name: String, netfilter: Arc<Netfilter>) -> Proxy {
        Proxy {
            node_name,
            netfilter,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            relisting_services: None,
            relisting_slices: None,
            services_listed: false,
            slices_listed: false,
            dirty: BTreeSet::new(),
            dirty_since: None,
            programmed: BTreeMap::new(),
            ports_of: HashMap::new(),
            element_owner: HashMap::new(),
            resync: false,
            udp_flows: BTreeMap::new(),
        }
    }

    /// Both lists are in: before that a Service could look endpoint-less and reject.
    fn ready(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    fn pending(&self) -> bool {
        !self.dirty.is_empty() || self.resync
    }

    fn mark(&mut self, service: ServiceRef) {
        self.dirty.insert(service);
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    fn service_event(&mut self, event: Event<Service>) {
        match event {
            Event::Init => self.relisting_services = Some(Vec::new()),
            Event::InitApply(s) => self.relisting_services.get_or_insert_with(Vec::new).push(s),
            Event::InitDone => {
                let listed = self.relisting_services.take().unwrap_or_default();
                let old: Vec<ServiceRef> = self.services.keys().cloned().collect();
                self.services.clear();
                for s in old {
                    self.mark(s);
                }
                for s in listed {
                    self.apply_service(s);
                }
                self.services_listed = true;
            }
            Event::Apply(s) => self.apply_service(s),
            Event::Delete(s) => {
                if let Some(key) = service_ref(&s) {
                    self.services.remove(&key);
                    self.mark(key);
                }
            }
        }
    }

    fn apply_service(&mut self, s: Service) {
        if let Some(key) = service_ref(&s) {
            self.services.insert(key.clone(), s);
            self.mark(key);
        }
    }

    fn slice_event(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Init => self.relisting_slices = Some(Vec::new()),
            Event::InitApply(s) => self.relisting_slices.get_or_insert_with(Vec::new).push(s),
            Event::InitDone => {
                let listed = self.relisting_slices.take().unwrap_or_default();
                let old: Vec<ServiceRef> = self.slices.keys().cloned().collect();
                self.slices.clear();
                self.slice_owner.clear();
                for s in old {
                    self.mark(s);
                }
                for s in listed {
                    self.apply_slice(s);
                }
                self.slices_listed = true;
            }
            Event::Apply(s) => self.apply_slice(s),
            Event::Delete(s) => {
                if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                    self.remove_slice(ns, name);
                }
            }
        }
    }

    fn remove_slice(&mut self, namespace: &str, name: &str) {
        let slice_key = (namespace.to_string(), name.to_string());
        if let Some(owner) = self.slice_owner.remove(&slice_key) {
            if let Some(by_name) = self.slices.get_mut(&owner) {
                by_name.remove(name);
                if by_name.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.mark(owner);
        }
    }

    fn apply_slice(&mut self, s: EndpointSlice) {
        let (Some(ns), Some(name)) = (s.metadata.namespace.clone(), s.metadata.name.clone()) else {
            return;
        };
        self.remove_slice(&ns, &name);
        let Some(service) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            return;
        };
        let owner = (ns.clone(), service);
        self.slice_owner.insert((ns, name.clone()), owner.clone());
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(name, s);
        self.mark(owner);
    }

    /// Programs the changed Services in one transaction; on failure nothing changed in the
    /// kernel, the changes stay pending and the next attempt resynchronises everything.
    async fn sync(&mut self) -> Result<(), super::NetfilterError> {
        let started = Instant::now();
        let waited = self.dirty_since.map(|t| started.duration_since(t));
        let keys: Vec<ServiceRef> = if self.resync {
            self.services
                .keys()
                .chain(self.ports_of.keys())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        } else {
            self.dirty.iter().cloned().collect()
        };
        // The desired rules of every port of the changed Services.
        let mut desired: BTreeMap<PortKey, PortRules> = BTreeMap::new();
        let mut flows: BTreeMap<PortKey, conntrack::UdpFlow> = BTreeMap::new();
        let mut owners = self.element_owner.clone();
        let mut released: Vec<(rules::MapName, rules::ElementKey)> = Vec::new();
        for key in &keys {
            for port in self.ports_of.get(key).into_iter().flatten() {
                if let Some(old) = self.programmed.get(port) {
                    for e in &old.elements {
                        released.push((e.map, e.key));
                    }
                }
            }
        }
        for k in &released {
            owners.remove(k);
        }
        for key in &keys {
            let Some(service) = self.services.get(key) else {
                continue;
            };
            let slices = self.slices.get(key).map(|m| m.values().collect::<Vec<_>>());
            let slices = slices.unwrap_or_default();
            for port in model::proxied_ports(service, slices.iter().copied(), &self.node_name) {
                let mut r = rules::port_rules(&port);
                r.elements.retain(|e| match owners.get(&(e.map, e.key)) {
                    Some(other) if *other != port.key => {
                        tracing::warn!(
                            service = %port.key.display(),
                            taken_by = %other.display(),
                            key = %e.key,
                            "another Service already leads this address and port: skipped"
                        );
                        false
                    }
                    _ => {
                        owners.insert((e.map, e.key), port.key.clone());
                        true
                    }
                });
                if let Some(flow) = conntrack::UdpFlow::of(&port) {
                    flows.insert(port.key.clone(), flow);
                }
                desired.insert(port.key, r);
            }
        }
        let old_ports: BTreeSet<PortKey> = keys
            .iter()
            .filter_map(|k| self.ports_of.get(k))
            .flatten()
            .cloned()
            .collect();
        let mut text = String::new();
        let mut changes = Vec::new();
        if self.resync {
            let known: Vec<&PortRules> = self.programmed.values().collect();
            text = transaction::clear(self.netfilter.table(), &known);
            for new in desired.values() {
                changes.push(Change {
                    old: None,
                    new: Some(new),
                });
            }
        } else {
            for port in old_ports.union(&desired.keys().cloned().collect()) {
                let (old, new) = (self.programmed.get(port), desired.get(port));
                if old != new {
                    changes.push(Change { old, new });
                }
            }
        }
        let changed = changes.len();
        text.push_str(&transaction::script(self.netfilter.table(), &changes));
        if !text.is_empty() {
            let result = self.netfilter.apply_services(&text).await;
            if let Err(e) = result {
                self.resync = true;
                return Err(e);
            }
        }
        // The kernel now holds `desired` for these Services; UDP flows still led to
        // endpoints that left are cleared after it (a packet before would re-create them).
        let stale: Vec<Vec<String>> = old_ports
            .iter()
            .chain(desired.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .flat_map(|port| conntrack::stale(self.udp_flows.get(port), flows.get(port)))
            .collect();
        for port in &old_ports {
            self.udp_flows.remove(port);
        }
        self.udp_flows.extend(flows);
        if !stale.is_empty() {
            tokio::spawn(conntrack::clear(stale));
        }
        if self.resync {
            self.programmed.clear();
            self.ports_of.clear();
        }
        for port in &old_ports {
            self.programmed.remove(port);
        }
        for key in &keys {
            self.ports_of.remove(key);
        }
        for (port, r) in desired {
            self.ports_of
                .entry((port.namespace.clone(), port.service.clone()))
                .or_default()
                .insert(port.clone());
            self.programmed.insert(port, r);
        }
        self.element_owner = owners;
        self.dirty.clear();
        self.dirty_since = None;
        tracing::info!(
            table = %self.netfilter.table(),
            services = keys.len(),
            ports_changed = changed,
            script_lines = text.lines().count(),
            // From the first change the watches delivered to the rules being in the kernel.
            latency_ms = (waited.unwrap_or_default() + started.elapsed()).as_secs_f64() * 1000.0,
            apply_ms = started.elapsed().as_secs_f64() * 1000.0,
            resync = self.resync,
            "Service rules programmed"
        );
        self.resync = false;
        Ok(())
    }
}

fn service_ref(s: &Service) -> Option<ServiceRef> {
    Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?))
}
