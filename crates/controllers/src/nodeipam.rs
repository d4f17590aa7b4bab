//! The node IPAM loop (upstream's node-ipam-controller, RangeAllocator): every Node without a
//! `spec.podCIDR` gets the first free block of `--cluster-cidr` of `--node-cidr-mask-size`.
//!
//! Blocks already on Nodes (any inside the cluster range, e.g. a node agent's own
//! `--pod-cidr`) count as taken; one allocation runs at a time, and a block handed out stays
//! taken in memory until the Node shows it, so two new Nodes never get the same one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::events::EventType;
use capstan_slim::{Action, Controller};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use tokio::sync::Mutex;

use crate::backoff::Backoff;
use crate::context::Context;

/// An IPv4 network `addr/prefix`, its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    pub base: u32,
    pub prefix: u8,
}

impl Block {
    /// `a.b.c.d/n` with n in 8..=30 (upstream refuses masks leaving no pod addresses).
    pub fn parse(text: &str) -> Option<Block> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if !(8..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Some(Block {
            base: u32::from(addr) & mask,
            prefix,
        })
    }

    fn contains(&self, other: &Block) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        other.prefix >= self.prefix && other.base & mask == self.base
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The cluster range cut into node blocks.
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    pub cluster: Block,
    pub node_prefix: u8,
}

impl Allocator {
    /// None when the node blocks do not fit the cluster range.
    pub fn new(cluster: Block, node_prefix: u8) -> Option<Allocator> {
        (node_prefix >= cluster.prefix && node_prefix <= 30).then_some(Allocator {
            cluster,
            node_prefix,
        })
    }

    /// The first node block overlapping none of `taken`.
    pub fn first_free(&self, taken: &BTreeSet<Block>) -> Option<Block> {
        let count = 1u64 << (self.node_prefix - self.cluster.prefix);
        let step = 1u64 << (32 - u32::from(self.node_prefix));
        (0..count).find_map(|i| {
            let block = Block {
                base: u32::try_from(u64::from(self.cluster.base) + i * step).ok()?,
                prefix: self.node_prefix,
            };
            let overlaps = taken
                .iter()
                .any(|t| t.contains(&block) || block.contains(t));
            (!overlaps).then_some(block)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no free pod CIDR of /{0} is left in the cluster CIDR {1}")]
    Exhausted(u8, Block),
}

struct Loop {
    ctx: Arc<Context>,
    alloc: Allocator,
    /// Blocks handed out that the node store may not show yet.
    pending: Mutex<BTreeSet<Block>>,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let Some(alloc) = ctx.opts.node_cidrs else {
        tracing::debug!("node-ipam-controller: no cluster CIDR to allocate from");
        return;
    };
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        alloc,
        pending: Mutex::new(BTreeSet::new()),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    // The shared Node informer (the loop reads it for blocks in use anyway): its own watch
    // was a second copy of every Node (18 MB at 1,000 simulated nodes).
    let nodes = ctx.nodes();
    Controller::for_shared_stream(nodes.subscribe(), nodes.store.clone())
        .run(reconcile, error_policy, lp)
        .await;
}

fn error_policy(node: Arc<Node>, err: &Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&node.name_any());
    tracing::warn!(node = %node.name_any(), attempts, error = %err, "could not allocate the node's pod CIDR; retrying");
    if matches!(err, Error::Exhausted(..)) {
        let recorder = lp.ctx.recorder("cidrAllocator");
        let message = err.to_string();
        tokio::spawn(async move {
            recorder
                .record(&*node, EventType::Warning, "CIDRNotAvailable", &message)
                .await;
        });
    }
    Action::requeue(delay)
}

fn pod_cidrs(node: &Node) -> Vec<Block> {
    let spec = node.spec.as_ref();
    let mut out: Vec<Block> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.pod_cidr.as_ref()))
        .filter_map(|c| Block::parse(c))
        .collect();
    out.dedup();
    out
}

async fn reconcile(node: Arc<Node>, lp: Arc<Loop>) -> Result<Action, Error> {
    let has_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if has_cidr {
        lp.backoff.reset(&node.name_any());
        return Ok(Action::await_change());
    }
    // One allocation at a time: the taken set is read and extended under the lock.
    let mut pending = lp.pending.lock().await;
    let nodes = lp.ctx.nodes().store.state();
    let shown: BTreeSet<Block> = nodes.iter().flat_map(|n| pod_cidrs(n)).collect();
    pending.retain(|b| !shown.contains(b));
    let mut taken = shown;
    taken.extend(pending.iter().copied());
    let taken: BTreeSet<Block> = taken
        .into_iter()
        .filter(|b| lp.alloc.cluster.contains(b) || b.contains(&lp.alloc.cluster))
        .collect();
    let block = lp
        .alloc
        .first_free(&taken)
        .ok_or(Error::Exhausted(lp.alloc.node_prefix, lp.alloc.cluster))?;
    let cidr = block.to_string();
    // The event that woke this may be older than the Node: read it again, and patch only
    // that version (a 409 retries with what is current).
    let api = Api::<Node>::all(lp.ctx.client.clone());
    let Some(current) = api.get_opt(&node.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if !pod_cidrs(&current).is_empty() {
        return Ok(Action::await_change());
    }
    let body = serde_json::json!({
        "metadata": {"resourceVersion": current.resource_version()},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    });
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await?;
    pending.insert(block);
    tracing::info!(node = %node.name_any(), pod_cidr = %cidr, "allocated the node's pod CIDR");
    lp.backoff.reset(&node.name_any());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Block {
        Block::parse(s).unwrap()
    }

    #[test]
    fn blocks_are_handed_out_first_free_around_taken_ones() {
        let a = Allocator::new(b("10.42.0.0/16"), 24).unwrap();
        assert_eq!(a.first_free(&BTreeSet::new()), Some(b("10.42.0.0/24")));
        let taken: BTreeSet<Block> = [b("10.42.0.0/24"), b("10.42.2.0/24")].into();
        assert_eq!(a.first_free(&taken), Some(b("10.42.1.0/24")));
        // A wider block taken covers several node blocks.
        let taken: BTreeSet<Block> = [b("10.42.0.0/23")].into();
        assert_eq!(a.first_free(&taken), Some(b("10.42.2.0/24")));
        // A narrower one spoils its node block.
        let taken: BTreeSet<Block> = [b("10.42.0.128/25")].into();
        assert_eq!(a.first_free(&taken), Some(b("10.42.1.0/24")));
        assert_eq!(b("10.42.7.9/16").to_string(), "10.42.0.0/16");
    }

    #[test]
    fn a_full_range_has_nothing_free() {
        let a = Allocator::new(b("10.42.0.0/23"), 24).unwrap();
        let taken: BTreeSet<Block> = [b("10.42.0.0/24"), b("10.42.1.0/24")].into();
        assert_eq!(a.first_free(&taken), None);
        assert!(Allocator::new(b("10.42.0.0/24"), 16).is_none());
        assert!(Block::parse("10.42.0.0/31").is_none());
        assert!(Block::parse("nonsense").is_none());
    }
}
