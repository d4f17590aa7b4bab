//! The simulated nodes and what each one keeps: its shape, addresses, pod IP pool, Lease and
//! whether it is stopped; shared by the heartbeat, node-watch and pod tasks.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;

use super::cidr::IpPool;
use super::groups::NodeGroup;
use super::SimConfig;
use crate::api_retry::Writer;

pub struct SimNode {
    pub name: String,
    pub index: usize,
    pub group: Arc<NodeGroup>,
    pub internal_ip: Ipv4Addr,
    /// Set at registration (ours, or the one an existing Node already had).
    pub pod_cidr: Mutex<String>,
    pub pool: Mutex<Option<IpPool>>,
    pub uid: Mutex<Option<String>>,
    /// The last Lease written or read, so a renewal is one PUT, as the kubelet does it.
    pub lease: tokio::sync::Mutex<Option<Lease>>,
    /// The node's conditions as last observed (for lastTransitionTime).
    pub conditions: Mutex<Option<serde_json::Value>>,
    /// True while the node is stopped: no heartbeats, no pod status.
    pub stopped: watch::Sender<bool>,
    /// How many times the node resumed: a pod worker that parked before a resume it did not
    /// see reports afresh when it is taken back (the resume and the parking race).
    pub resumes: AtomicU64,
}

impl SimNode {
    pub fn new(name: String, index: usize, group: Arc<NodeGroup>, pod_cidr: String) -> SimNode {
        SimNode {
            name,
            index,
            group,
            internal_ip: internal_ip(index),
            pool: Mutex::new(IpPool::new(&pod_cidr).ok()),
            pod_cidr: Mutex::new(pod_cidr),
            uid: Mutex::new(None),
            lease: tokio::sync::Mutex::new(None),
            conditions: Mutex::new(None),
            stopped: watch::Sender::new(false),
            resumes: AtomicU64::new(0),
        }
    }

    /// Use the podCIDR an existing Node already has: its pods' addresses come from it.
    pub fn adopt_pod_cidr(&self, cidr: &str) {
        let mut cur = lock(&self.pod_cidr);
        if *cur != cidr {
            if let Ok(pool) = IpPool::new(cidr) {
                *cur = cidr.to_string();
                *lock(&self.pool) = Some(pool);
            }
        }
    }

    pub fn allocate_ip(&self) -> Option<Ipv4Addr> {
        lock(&self.pool).as_mut()?.allocate()
    }

    pub fn reserve_ip(&self, ip: Ipv4Addr) -> bool {
        lock(&self.pool).as_mut().is_some_and(|p| p.reserve(ip))
    }

    pub fn release_ip(&self, ip: Ipv4Addr) {
        if let Some(p) = lock(&self.pool).as_mut() {
            p.release(ip);
        }
    }
}

/// A poisoned lock only means another task panicked mid-update of plain data: keep going.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Node i's InternalIP: 172.16.0.0/12 counted from .1, far from pod and Service ranges.
fn internal_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + (index as u32 % 0x000f_fffe))
}

pub struct Fleet {
    pub client: kube::Client,
    pub config: SimConfig,
    pub writer: Writer,
    pub nodes: HashMap<String, Arc<SimNode>>,
    /// In registration order.
    pub ordered: Vec<Arc<SimNode>>,
    /// Names of nodes that resumed (sent by the node watch, taken by the pod watch: its
    /// parked pods on that node report afresh).
    pub resumed: tokio::sync::mpsc::UnboundedSender<String>,
    resumed_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

impl Fleet {
    pub fn new(
        client: kube::Client,
        config: SimConfig,
        writer: Writer,
        ordered: Vec<Arc<SimNode>>,
    ) -> Fleet {
        let (resumed, rx) = tokio::sync::mpsc::unbounded_channel();
        Fleet {
            client,
            config,
            writer,
            nodes: ordered
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            ordered,
            resumed,
            resumed_rx: Mutex::new(Some(rx)),
        }
    }

    /// The receiver of `resumed`, once.
    pub fn take_resumed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        lock(&self.resumed_rx).take()
    }

    pub fn node(&self, name: &str) -> Option<&Arc<SimNode>> {
        self.nodes.get(name)
    }
}
