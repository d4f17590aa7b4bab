//! Addresses: each simulated node's podCIDR cut from the cluster CIDR (node i gets block i),
//! and the pod IP pool inside it (round robin, as the host-local IPAM plugin allocates).

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR (a.b.c.d/n)")]
    Syntax(String),
    #[error(
        "node CIDR mask /{node} must be longer than the cluster CIDR's /{cluster} and at most /30"
    )]
    Mask { cluster: u8, node: u8 },
    #[error("the cluster CIDR {cidr} has {blocks} /{mask} blocks: too few for {nodes} nodes")]
    TooSmall {
        cidr: String,
        blocks: u64,
        mask: u8,
        nodes: usize,
    },
}

pub fn parse_cidr(s: &str) -> Result<(u32, u8), CidrError> {
    let bad = || CidrError::Syntax(s.to_string());
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((u32::from(ip) & mask, len))
}

/// The cluster CIDR and the size of each node's block.
#[derive(Debug, Clone)]
pub struct ClusterCidr {
    base: u32,
    node_mask: u8,
    blocks: u64,
}

impl ClusterCidr {
    pub fn new(cidr: &str, node_mask: u8, nodes: usize) -> Result<ClusterCidr, CidrError> {
        let (base, len) = parse_cidr(cidr)?;
        if node_mask <= len || node_mask > 30 {
            return Err(CidrError::Mask {
                cluster: len,
                node: node_mask,
            });
        }
        let blocks = 1u64 << (node_mask - len);
        if (nodes as u64) > blocks {
            return Err(CidrError::TooSmall {
                cidr: cidr.into(),
                blocks,
                mask: node_mask,
                nodes,
            });
        }
        Ok(ClusterCidr {
            base,
            node_mask,
            blocks,
        })
    }

    /// Node `index`'s podCIDR, e.g. `10.128.3.0/24`.
    pub fn node_block(&self, index: usize) -> Option<String> {
        if index as u64 >= self.blocks {
            return None;
        }
        let size = 1u64 << (32 - self.node_mask);
        let start = self.base as u64 + index as u64 * size;
        Some(format!(
            "{}/{}",
            Ipv4Addr::from(start as u32),
            self.node_mask
        ))
    }
}

/// The pod addresses of one node's block: the network address, the gateway (.1) and the
/// broadcast address are never handed out.
#[derive(Debug)]
pub struct IpPool {
    base: u32,
    used: Vec<bool>,
    next: usize,
    free: usize,
}

impl IpPool {
    pub fn new(cidr: &str) -> Result<IpPool, CidrError> {
        let (base, len) = parse_cidr(cidr)?;
        if len > 30 {
            return Err(CidrError::Syntax(cidr.into()));
        }
        let size = 1usize << (32 - len);
        let mut used = vec![false; size];
        used[0] = true;
        used[1] = true;
        used[size - 1] = true;
        Ok(IpPool {
            base,
            used,
            next: 2,
            free: size - 3,
        })
    }

    /// The next free address after the last one handed out, so a released address is not
    /// reused at once (a late packet or a stale endpoint must not reach a new pod).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        if self.free == 0 {
            return None;
        }
        let n = self.used.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.free -= 1;
                self.next = (i + 1) % n;
                return Some(Ipv4Addr::from(self.base + i as u32));
            }
        }
        None
    }

    /// Mark an address a pod already has (found on restart) as taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(i) if !self.used[i] => {
                self.used[i] = true;
                self.free -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.offset(ip) {
            if self.used[i] && i >= 2 && i + 1 < self.used.len() {
                self.used[i] = false;
                self.free += 1;
            }
        }
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<usize> {
        let ip = u32::from(ip);
        let i = ip.checked_sub(self.base)? as usize;
        (i < self.used.len()).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_blocks_are_cut_in_order_and_bounded() {
        let c = ClusterCidr::new("10.128.0.0/9", 24, 5000).unwrap();
        assert_eq!(c.node_block(0).unwrap(), "10.128.0.0/24");
        assert_eq!(c.node_block(1).unwrap(), "10.128.1.0/24");
        assert_eq!(c.node_block(300).unwrap(), "10.129.44.0/24");
        assert_eq!(c.node_block(32767).unwrap(), "10.255.255.0/24");
        assert_eq!(c.node_block(32768), None);
        assert!(matches!(
            ClusterCidr::new("10.244.0.0/16", 24, 1000),
            Err(CidrError::TooSmall { blocks: 256, .. })
        ));
        assert!(ClusterCidr::new("10.0.0.0/24", 16, 1).is_err());
        assert!(ClusterCidr::new("nonsense", 24, 1).is_err());
    }

    #[test]
    fn the_pool_skips_reserved_addresses_and_round_robins() {
        let mut p = IpPool::new("10.0.0.0/29").unwrap();
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        let want: Vec<Ipv4Addr> = (2..7).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(got, want);
        assert_eq!(p.allocate(), None);
        p.release(Ipv4Addr::new(10, 0, 0, 3));
        p.release(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        p.release(Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.reserve(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(!p.reserve(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p.allocate(), None);
    }
}
