//! Pod traffic between nodes (flannel's host-gw, no encapsulation): a kernel route to every
//! other Node's podCIDR via that Node's InternalIP, and the podCIDRs in the packet rules'
//! no-masquerade set, so pods on different nodes see each other's own addresses.
//!
//! Routes need the other node on this node's link (as host-gw does); one that is not gets no
//! route here (logged once) and its pods are reached along the default route, which works
//! when the default gateway is that node or routes its podCIDR. Routes are kept in memory:
//! a Node deleted takes its route with it; a restarted agent replaces what it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::Cidr;
use crate::netfilter::Netfilter;

/// Changes arriving within this are programmed together.
const BATCH: Duration = Duration::from_millis(20);

/// Another node's pod network and where to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub cidr_base: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
}

/// The peers `nodes` call for, seen from node `me` with podCIDR `own`.
pub fn peers<'a>(nodes: impl Iterator<Item = &'a Node>, me: &str, own: Cidr) -> BTreeSet<Peer> {
    nodes
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr = Cidr::parse(n.spec.as_ref()?.pod_cidr.as_deref()?).ok()?;
            let via = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| match a.address.parse::<IpAddr>().ok()? {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })?;
            (cidr != own && !via.is_loopback()).then_some(Peer {
                cidr_base: cidr.base,
                prefix: cidr.prefix,
                via,
            })
        })
        .collect()
}

/// Watches the Nodes and keeps routes and the no-masquerade set equal to their podCIDRs, until
/// dropped.
pub async fn run(client: kube::Client, me: String, own: Cidr, netfilter: Option<Arc<Netfilter>>) {
    let handle = match super::connect() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "no routes to other nodes' pods");
            return;
        }
    };
    let (store, writer) = reflector::store();
    let api: Api<Node> = Api::all(client);
    let changes = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    futures::pin_mut!(changes);
    let mut installed: BTreeMap<(Ipv4Addr, u8), Ipv4Addr> = BTreeMap::new();
    let mut unreachable: BTreeSet<Peer> = BTreeSet::new();
    let mut last_cidrs: Option<Vec<Cidr>> = None;
    while changes.next().await.is_some() {
        // Let a burst settle, then program from the store's whole view.
        let _ =
            tokio::time::timeout(BATCH, async { while changes.next().await.is_some() {} }).await;
        let nodes = store.state();
        let want = peers(nodes.iter().map(|n| n.as_ref()), &me, own);
        sync_routes(&handle, &want, &mut installed, &mut unreachable).await;
        let cidrs: Vec<Cidr> = want
            .iter()
            .map(|p| Cidr {
                base: p.cidr_base,
                prefix: p.prefix,
            })
            .collect();
        if last_cidrs.as_ref() != Some(&cidrs) {
            if let Some(nf) = &netfilter {
                match nf.set_pod_cidrs(own, &cidrs).await {
                    Ok(()) => last_cidrs = Some(cidrs),
                    Err(e) => {
                        tracing::warn!(error = %e, "updating the no-masquerade podCIDRs failed")
                    }
                }
            }
        }
    }
}

async fn sync_routes(
    handle: &Handle,
    want: &BTreeSet<Peer>,
    installed: &mut BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
    unreachable: &mut BTreeSet<Peer>,
) {
    let wanted: BTreeMap<(Ipv4Addr, u8), Ipv4Addr> = want
        .iter()
        .map(|p| ((p.cidr_base, p.prefix), p.via))
        .collect();
    let gone: Vec<((Ipv4Addr, u8), Ipv4Addr)> = installed
        .iter()
        .filter(|(k, v)| wanted.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    for ((base, prefix), via) in gone {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(base, prefix)
            .gateway(via)
            .build();
        if let Err(e) = handle.route().del(route).execute().await {
            tracing::debug!(cidr = %format!("{base}/{prefix}"), error = %e, "removing a pod route failed");
        }
        installed.remove(&(base, prefix));
        tracing::info!(cidr = %format!("{base}/{prefix}"), %via, "pod route removed");
    }
    for peer in want {
        let key = (peer.cidr_base, peer.prefix);
        if installed.get(&key) == Some(&peer.via) {
            continue;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(peer.cidr_base, peer.prefix)
            .gateway(peer.via)
            .build();
        match handle.route().add(route).replace().execute().await {
            Ok(()) => {
                installed.insert(key, peer.via);
                unreachable.remove(peer);
                tracing::info!(cidr = %format!("{}/{}", peer.cidr_base, peer.prefix), via = %peer.via, "pod route added");
            }
            Err(e) => {
                if unreachable.insert(*peer) {
                    tracing::warn!(cidr = %format!("{}/{}", peer.cidr_base, peer.prefix), via = %peer.via, error = %e,
                        "no route to another node's pods (not on this node's link?): they are reached along the default route");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_ipv4_address_is_a_peer() {
        let own = Cidr::parse("10.42.0.0/24").unwrap();
        let nodes = [
            node("me", "10.42.0.0/24", "192.0.2.1"),
            node("b", "10.42.1.0/24", "192.0.2.2"),
            node("v6", "10.42.2.0/24", "2001:db8::1"),
            node("nocidr", "", "192.0.2.4"),
            node("same", "10.42.0.0/24", "192.0.2.5"),
        ];
        let got = peers(nodes.iter(), "me", own);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![Peer {
                cidr_base: "10.42.1.0".parse().unwrap(),
                prefix: 24,
                via: "192.0.2.2".parse().unwrap(),
            }]
        );
    }
}
