//! The pod network on this node: a bridge holding the first address of the node's podCIDR,
//! and per pod a veth pair — one end on the bridge, the other as `eth0` in the pod's network
//! namespace with an address from `ipam` and a default route via the bridge — so pods reach
//! each other and the node. Links are made over rtnetlink; work inside a pod's namespace
//! runs on a short-lived thread that entered it.

mod ipam;
pub mod node_routes;
pub mod pod_cidr;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use ipam::Ipam;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid pod CIDR {0:?}: want an IPv4 a.b.c.d/n with n between 16 and 30")]
    Cidr(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{context}: {reason}")]
    Netlink { context: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let context = context.into();
    move |e| NetworkError::Netlink {
        context,
        reason: netlink_reason(&e),
    }
}

/// Why a netlink request failed, in words. Not `rtnetlink::Error`'s own `Display`: for an
/// unexpected message it prints the whole message with `Debug`, which links the `Debug` code of
/// every netlink message type (~180 KB of the binary) for a case the kernel does not produce.
pub(crate) fn netlink_reason(e: &rtnetlink::Error) -> String {
    use rtnetlink::Error as E;
    match e {
        E::NetlinkError(msg) => msg.to_io().to_string(),
        E::UnexpectedMessage(msg) => format!(
            "unexpected netlink message (type {})",
            msg.header.message_type
        ),
        E::RequestFailed => "the netlink request failed".to_string(),
        E::NamespaceError(why) => format!("namespace error: {why}"),
        E::InvalidHardwareAddress(_) => "invalid hardware address in a link message".to_string(),
        E::InvalidIp(_) => "invalid IP address in a netlink message".to_string(),
        E::InvalidAddress(_, _) => "invalid network address in a netlink message".to_string(),
        E::InvalidNla(nla) => format!("invalid netlink attribute: {nla}"),
    }
}

/// An IPv4 network: its base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, NetworkError> {
        let bad = || NetworkError::Cidr(text.to_string());
        let (ip, len) = text.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(16..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    /// The n-th address of the network.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The bridge's address (the pods' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The node's pod network.
pub struct PodNetwork {
    bridge: String,
    cidr: Cidr,
    ipam: Ipam,
}

impl PodNetwork {
    /// Creates (or finds) the bridge `bridge` with the CIDR's gateway address.
    pub async fn open(
        bridge: &str,
        cidr: Cidr,
        state_dir: &Path,
    ) -> Result<PodNetwork, NetworkError> {
        let ipam = Ipam::open(state_dir, cidr)?;
        let handle = connect()?;
        let index = match link_index(&handle, bridge).await? {
            Some(i) => i,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(bridge).up().build())
                    .execute()
                    .await
                    .map_err(nl(format!("creating bridge {bridge}")))?;
                link_index(&handle, bridge)
                    .await?
                    .ok_or_else(|| NetworkError::Netlink {
                        context: format!("bridge {bridge}"),
                        reason: "not found after creation".into(),
                    })?
            }
        };
        handle
            .address()
            .add(index, cidr.gateway().into(), cidr.prefix)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("addressing bridge {bridge}")))?;
        handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bringing bridge {bridge} up")))?;
        Ok(PodNetwork {
            bridge: bridge.to_string(),
            cidr,
            ipam,
        })
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// Connects the pod's namespace (idempotent: a pod already wired keeps its address).
    pub async fn attach(&self, pod_uid: &str, net_ns: &Path) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.ipam.allocate(pod_uid)?;
        let host_end = host_veth(pod_uid);
        let handle = connect()?;
        if link_index(&handle, &host_end).await?.is_some() {
            set_hairpin(&host_end);
            return Ok(ip);
        }
        let peer = format!("{host_end}p");
        handle
            .link()
            .add(LinkVeth::new(&host_end, &peer).build())
            .execute()
            .await
            .map_err(nl(format!("creating veth {host_end}")))?;
        let bridge =
            link_index(&handle, &self.bridge)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    context: format!("bridge {}", self.bridge),
                    reason: "missing".into(),
                })?;
        let host_index =
            link_index(&handle, &host_end)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    context: format!("veth {host_end}"),
                    reason: "missing after creation".into(),
                })?;
        handle
            .link()
            .change(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("attaching {host_end} to {}", self.bridge)))?;
        set_hairpin(&host_end);
        let ns_file = std::fs::File::open(net_ns).map_err(|source| NetworkError::Io {
            context: format!("opening {}", net_ns.display()),
            source,
        })?;
        let peer_index =
            link_index(&handle, &peer)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    context: format!("veth {peer}"),
                    reason: "missing after creation".into(),
                })?;
        handle
            .link()
            .change(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("moving {peer} into the pod's namespace")))?;
        let (cidr, gateway) = (self.cidr, self.cidr.gateway());
        in_namespace(net_ns.to_path_buf(), move |h| async move {
            let index = link_index(&h, &peer)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    context: format!("veth {peer} in the pod"),
                    reason: "missing".into(),
                })?;
            h.link()
                .change(
                    LinkUnspec::new_with_index(index)
                        .name("eth0".to_string())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("renaming the pod's interface to eth0"))?;
            h.address()
                .add(index, ip.into(), cidr.prefix)
                .replace()
                .execute()
                .await
                .map_err(nl("addressing eth0"))?;
            h.link()
                .change(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl("bringing eth0 up"))?;
            if let Some(lo) = link_index(&h, "lo").await? {
                h.link()
                    .change(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(nl("bringing lo up"))?;
            }
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .build();
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(nl("adding the default route"))?;
            Ok(())
        })
        .await?;
        Ok(ip)
    }

    /// Removes the pod's veth (its peer goes with it) and frees its address.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), NetworkError> {
        let handle = connect()?;
        if let Some(index) = link_index(&handle, &host_veth(pod_uid)).await? {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(nl(format!("deleting veth {}", host_veth(pod_uid))))?;
        }
        self.ipam.release(pod_uid)
    }

    /// The address a pod holds, if any (after an agent restart).
    pub fn address_of(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.ipam.lookup(pod_uid)
    }
}

/// Lets the bridge send a frame back out of the port it came in on: a pod reaching itself
/// through a Service has its packet DNATed back to its own port (the bridge CNI plugin's
/// `hairpinMode`, which kube-proxy relies on). Without it only that case fails, so a
/// failure is logged, not returned.
fn set_hairpin(port: &str) {
    let path = format!("/sys/class/net/{port}/brport/hairpin_mode");
    if let Err(e) = std::fs::write(&path, "1") {
        tracing::warn!(path, error = %e, "enabling hairpin mode failed: a pod cannot reach itself through a Service");
    }
}

/// `vc` + 8 hex digits of the pod uid's hash: interface names hold 15 bytes at most.
fn host_veth(pod_uid: &str) -> String {
    let h = crate::names::stable_hash(&[pod_uid.as_bytes()]) as u32;
    format!("vc{h:08x}")
}

fn connect() -> Result<Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetworkError::Io {
        context: "opening a netlink socket".into(),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Deletes the bridge and every link enslaved to it (the pods' host-side veths; their peers
/// go with them) and forgets the addresses handed out under `state_dir` (`capstan cleanup`:
/// no pod survives it). Returns the names of the links removed.
pub async fn remove_bridge(bridge: &str, state_dir: &Path) -> Result<Vec<String>, NetworkError> {
    let handle = connect()?;
    let mut removed = Vec::new();
    if let Some(index) = link_index(&handle, bridge).await? {
        let mut links = handle.link().get().execute();
        let mut ports = Vec::new();
        while let Some(link) = links.try_next().await.map_err(nl("listing links"))? {
            let enslaved = link.attributes.iter().any(|a| {
                matches!(a, rtnetlink::packet_route::link::LinkAttribute::Controller(c) if *c == index)
            });
            if enslaved {
                let name = link.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                ports.push((link.header.index, name.unwrap_or_default()));
            }
        }
        for (port, name) in ports {
            handle
                .link()
                .del(port)
                .execute()
                .await
                .map_err(nl(format!("deleting {name}")))?;
            removed.push(name);
        }
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl(format!("deleting bridge {bridge}")))?;
        removed.push(bridge.to_string());
    }
    Ipam::forget_all(state_dir)?;
    Ok(removed)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}

/// Runs `f` with a netlink handle inside the namespace at `ns`: on a fresh thread that
/// entered it (sockets keep the namespace they were made in) and ends afterwards.
async fn in_namespace<F, Fut>(ns: PathBuf, f: F) -> Result<(), NetworkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), NetworkError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let file = std::fs::File::open(&ns).map_err(|source| NetworkError::Io {
                context: format!("opening {}", ns.display()),
                source,
            })?;
            // SAFETY: setns on a valid namespace fd; it affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetworkError::Io {
                    context: "entering the pod's network namespace".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| NetworkError::Io {
                    context: "a runtime for the namespace thread".into(),
                    source,
                })?;
            rt.block_on(async move {
                let handle = connect()?;
                f(handle).await
            })
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| NetworkError::Netlink {
        context: "pod namespace thread".into(),
        reason: "ended without an answer".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.42.0.7/24").expect("cidr");
        assert_eq!(c.base, Ipv4Addr::new(10, 42, 0, 0));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(c.size(), 256);
        assert!(Cidr::parse("10.0.0.0/8").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert_eq!(host_veth("abc").len(), 10);
    }
}
