//! Pod traffic between nodes (flannel's host-gw, no encapsulation): a kernel route to every
//! other Node's podCIDR via that Node's InternalIP, and the podCIDRs in the packet rules'
//! no-masquerade set, so pods on different nodes see each other's own addresses.
//!
//! Routes need the other node on this node's link (as host-gw does); one that is not gets no
//! route here (logged once) and its pods are reached along the default route, which works
//! when the default gateway is that node or routes its podCIDR. A Node deleted takes its
//! route with it. The routes made are also listed in a file (`<root>/network/routes`), so
//! an agent that was down while a Node went removes its route at start, and `capstan
//! cleanup` removes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
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
pub async fn run(
    client: kube::Client,
    me: String,
    own: Cidr,
    netfilter: Option<Arc<Netfilter>>,
    record: PathBuf,
) {
    let handle = match super::connect() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "no routes to other nodes' pods");
            return;
        }
    };
    let (store, writer) = reflector::store();
    let api: Api<Node> = Api::all(client);
    let changes = capstan_slim::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    futures::pin_mut!(changes);
    let mut installed: BTreeMap<(Ipv4Addr, u8), Ipv4Addr> = BTreeMap::new();
    // Routes an earlier run made: those the Nodes no longer call for go at the first sync.
    let mut leftover = read_record(&record);
    let mut unreachable: BTreeSet<Peer> = BTreeSet::new();
    let mut last_cidrs: Option<Vec<Cidr>> = None;
    while changes.next().await.is_some() {
        // Let a burst settle, then program from the store's whole view.
        let _ =
            tokio::time::timeout(BATCH, async { while changes.next().await.is_some() {} }).await;
        let nodes = store.state();
        let want = peers(nodes.iter().map(|n| n.as_ref()), &me, own);
        for (cidr, via) in std::mem::take(&mut leftover) {
            if !want
                .iter()
                .any(|p| (p.cidr_base, p.prefix) == cidr && p.via == via)
            {
                delete_route(&handle, cidr, via).await;
            }
        }
        let before = installed.clone();
        sync_routes(&handle, &want, &mut installed, &mut unreachable).await;
        if installed != before || !record.exists() {
            write_record(&record, &installed);
        }
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
    for (cidr, via) in gone {
        delete_route(handle, cidr, via).await;
        installed.remove(&cidr);
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
                    tracing::warn!(cidr = %format!("{}/{}", peer.cidr_base, peer.prefix), via = %peer.via, error = %super::netlink_reason(&e),
                        "no route to another node's pods (not on this node's link?): they are reached along the default route");
                }
            }
        }
    }
}

async fn delete_route(handle: &Handle, (base, prefix): (Ipv4Addr, u8), via: Ipv4Addr) {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(base, prefix)
        .gateway(via)
        .build();
    if let Err(e) = handle.route().del(route).execute().await {
        tracing::debug!(cidr = %format!("{base}/{prefix}"), error = %super::netlink_reason(&e), "removing a pod route failed");
    }
    tracing::info!(cidr = %format!("{base}/{prefix}"), %via, "pod route removed");
}

type Routes = BTreeMap<(Ipv4Addr, u8), Ipv4Addr>;

/// The routes file: one `base/prefix via` per line; a missing or damaged file is empty.
fn read_record(path: &Path) -> Routes {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (cidr, via) = line.split_once(' ')?;
            let (base, prefix) = cidr.split_once('/')?;
            Some((
                (base.parse().ok()?, prefix.parse().ok()?),
                via.parse().ok()?,
            ))
        })
        .collect()
}

fn write_record(path: &Path, routes: &Routes) {
    let text: String = routes
        .iter()
        .map(|((base, prefix), via)| format!("{base}/{prefix} {via}\n"))
        .collect();
    let tmp = path.with_extension("tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "recording the pod routes failed");
    }
}

/// `capstan cleanup`: removes the routes the record lists, and the record.
pub async fn remove_recorded(path: &Path) -> Vec<String> {
    let routes = read_record(path);
    let mut removed = Vec::new();
    if !routes.is_empty() {
        if let Ok(handle) = super::connect() {
            for (cidr, via) in &routes {
                delete_route(&handle, *cidr, *via).await;
                removed.push(format!("route {}/{} via {via}", cidr.0, cidr.1));
            }
        }
    }
    let _ = std::fs::remove_file(path);
    removed
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
    fn the_routes_record_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network").join("routes");
        assert!(read_record(&path).is_empty());
        let routes: Routes = [
            (
                ("10.42.1.0".parse().unwrap(), 24),
                "192.0.2.2".parse().unwrap(),
            ),
            (
                ("10.42.2.0".parse().unwrap(), 24),
                "192.0.2.3".parse().unwrap(),
            ),
        ]
        .into_iter()
        .collect();
        write_record(&path, &routes);
        assert_eq!(read_record(&path), routes);
        std::fs::write(&path, "garbage\n10.42.3.0/24 192.0.2.4\n").unwrap();
        assert_eq!(read_record(&path).len(), 1);
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
