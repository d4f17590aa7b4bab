//! capstan's node agent (the kubelet's job): it registers its Node, renews its Lease and runs
//! the pods bound to it as real containers; `simulate` holds the node simulator.
//!
//! Parts, each owning one concern: `images` (the content-addressed image store, import and
//! pull), `runtime` (containers via youki's libcontainer behind a per-container shim process),
//! `node` (registration, Lease, conditions, the kubelet HTTPS endpoint), `pods` (the pod
//! workers: sync a pod's spec to containers and report status), `logs` (container log files:
//! writing with rotation, reading for `pods/log`), `network` (bridge, veths, addresses),
//! `netfilter` (the node's nftables table: egress NAT, hostPorts, the Service proxy), `services`
//! (the Service cache), `dns` (cluster DNS: the `cluster.local` zone from the watches,
//! forwarding the rest), `storage` (the local-path provisioner: PersistentVolumes on this
//! node's disk), `streaming` (exec and port-forward sessions: SPDY and WebSocket),
//! `mountinfo` (what /proc/self/mountinfo says: mount points, overlay lower dirs).

pub mod dns;
pub mod images;
pub mod logs;
pub mod mountinfo;
pub mod names;
pub mod netfilter;
pub mod network;
pub mod node;
pub mod pods;
pub mod runtime;
pub mod services;
pub mod simulate;
pub mod storage;
pub mod streaming;

mod agent;
mod api_retry;
mod clock;
mod node_heartbeat;

pub use agent::{cleanup, run, AgentError, AgentOptions};
