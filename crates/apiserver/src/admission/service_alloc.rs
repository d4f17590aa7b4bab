//! ClusterIP and NodePort allocation for Services. Each allocation is a store key written in
//! the same transaction as the Service (and deleted with it), so two Services can never
//! hold one address or port, even under concurrent creates or a crash mid-way.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rand::RngExt;
use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin, Verdict};
use crate::status::{ApiError, Cause};
use crate::types::registry::ResourceType;
use crate::AppState;

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The ranges Services are allocated from.
#[derive(Debug, Clone)]
pub struct Ranges {
    /// Network address and prefix length of the service CIDR (IPv4).
    pub net: u32,
    pub bits: u8,
    pub ports: (u16, u16),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::parse("10.96.0.0/12", "30000-32767").unwrap_or(Ranges {
            net: 0x0a60_0000,
            bits: 12,
            ports: (30000, 32767),
        })
    }
}

impl Ranges {
    /// `--service-cluster-ip-range` and `--service-node-port-range`.
    pub fn parse(cidr: &str, ports: &str) -> Result<Ranges, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} needs a /prefix"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?}: only IPv4 is supported"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("service CIDR {cidr:?}: prefix must be /8 to /30"))?;
        let mask = u32::MAX << (32 - bits);
        let (lo, hi) = ports
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
            .filter(|(a, b)| a < b)
            .ok_or_else(|| format!("node port range {ports:?} must look like 30000-32767"))?;
        Ok(Ranges {
            net: u32::from(ip) & mask,
            bits,
            ports: (lo, hi),
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.bits);
        u32::from(ip) & mask == self.net
    }

    /// The address of the `kubernetes` Service: the range's first usable one.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 1)
    }

    /// The address of the `kube-dns` Service: the range's tenth (kubeadm's and k3s's
    /// convention: 10.96.0.10, 10.43.0.10).
    pub fn dns(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 10)
    }

    /// A free address from a random start, never the network, broadcast, or the
    /// `kubernetes` one; `None` when every one is taken.
    fn pick_ip(&self, taken: &BTreeSet<String>) -> Option<Ipv4Addr> {
        let usable = self.size().saturating_sub(3);
        if usable == 0 {
            return None;
        }
        let start = rand::rng().random_range(0..usable);
        (0..usable)
            .map(|i| Ipv4Addr::from(self.net + 2 + (start + i) % usable))
            .find(|ip| !taken.contains(&format!("{IP_PREFIX}{ip}")))
    }

    /// A free port from a random start; `None` when every one is taken.
    fn pick_port(&self, taken: &BTreeSet<String>, also: &BTreeSet<i64>) -> Option<i64> {
        let lo = i64::from(self.ports.0);
        let span = i64::from(self.ports.1) - lo + 1;
        let start = rand::rng().random_range(0..span);
        (0..span)
            .map(|i| lo + (start + i) % span)
            .find(|p| !also.contains(p) && !taken.contains(&format!("{PORT_PREFIX}{p}")))
    }
}

fn has_cluster_ip(obj: &Value) -> bool {
    obj.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

/// The allocation keys a Service holds.
pub fn held(obj: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip.parse::<Ipv4Addr>().is_ok() {
            out.insert(format!("{IP_PREFIX}{ip}"));
        }
    }
    for p in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
            out.insert(format!("{PORT_PREFIX}{n}"));
        }
    }
    out
}

/// What `assign` chose itself (so a clash is retried) rather than took from the user.
#[derive(Default, Debug)]
pub struct Chosen {
    pub keys: BTreeSet<String>,
    /// A range had no free address or port left.
    pub full: bool,
}

/// Where allocation keys live (to list what is taken).
pub const PREFIXES: [&str; 2] = [IP_PREFIX, PORT_PREFIX];

/// Fill in a ClusterIP and NodePorts where the Service asks for them and names none,
/// avoiding `taken` keys. `full` is set when a range has nothing left.
pub fn assign(r: &Ranges, obj: &mut Value) -> Chosen {
    assign_avoiding(r, obj, &BTreeSet::new())
}

pub fn assign_avoiding(r: &Ranges, obj: &mut Value, taken: &BTreeSet<String>) -> Chosen {
    let mut chosen = Chosen::default();
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return chosen;
    };
    if ty != "ExternalName" {
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = if ip.is_empty() {
            match r.pick_ip(taken) {
                Some(picked) => {
                    let picked = picked.to_string();
                    chosen.keys.insert(format!("{IP_PREFIX}{picked}"));
                    spec["clusterIP"] = json!(picked);
                    picked
                }
                None => {
                    chosen.full = true;
                    return chosen;
                }
            }
        } else {
            ip
        };
        spec["clusterIPs"] = json!([ip]);
        // An IPv4 single-stack cluster: asking for anything else is refused by
        // `range_causes`, not rewritten here.
        if spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
        {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)));
    if wants_node_ports {
        let mut used: BTreeSet<i64> = BTreeSet::new();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                    used.insert(n);
                }
            }
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                    let Some(n) = r.pick_port(taken, &used) else {
                        chosen.full = true;
                        return chosen;
                    };
                    used.insert(n);
                    chosen.keys.insert(format!("{PORT_PREFIX}{n}"));
                    p["nodePort"] = json!(n);
                }
            }
        }
    }
    chosen
}

/// Carry the allocated values of the stored Service into an update that leaves them out
/// (as upstream does), so a replace without them keeps its address and ports.
pub fn keep_allocated(old: &Value, new: &mut Value) {
    if !has_cluster_ip(new) || !has_cluster_ip(old) {
        return;
    }
    let Some(spec) = new.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(ip) = old.pointer("/spec/clusterIP") {
            spec["clusterIP"] = ip.clone();
        }
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            spec["clusterIPs"] = ips.clone();
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == p.get("port")
                    && o.get("protocol").or(Some(&json!("TCP")))
                        == p.get("protocol").or(Some(&json!("TCP")))
            });
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}

/// A user-chosen address or port outside the configured ranges.
pub fn range_causes(r: &Ranges, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    for (i, f) in obj
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if f.as_str() != Some("IPv4") {
            out.push(Cause::invalid(
                format!("spec.ipFamilies[{i}]"),
                f.as_str().unwrap_or(""),
                "not configured on this cluster",
            ));
        }
    }
    if obj.pointer("/spec/ipFamilyPolicy").and_then(Value::as_str) == Some("RequireDualStack") {
        out.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            "RequireDualStack",
            "this cluster is not configured for dual-stack services",
        ));
    }
    if let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            match ip.parse::<Ipv4Addr>() {
                Ok(a) if r.contains(a) => {}
                Ok(_) => out.push(Cause::invalid(
                    "spec.clusterIPs",
                    ip,
                    &format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                        Ipv4Addr::from(r.net),
                        r.bits
                    ),
                )),
                Err(_) => out.push(Cause::invalid("spec.clusterIPs[0]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
            }
        }
    }
    for (i, p) in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(n) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if n < i64::from(r.ports.0) || n > i64::from(r.ports.1) {
                out.push(Cause {
                    reason: "FieldValueInvalid",
                    field: format!("spec.ports[{i}].nodePort"),
                    message: format!(
                        "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        r.ports.0, r.ports.1
                    ),
                });
            }
        }
    }
    out
}

/// The cause for an address or port a user asked for that another Service holds.
pub fn taken_cause(obj: &Value, key: &str) -> Cause {
    if let Some(ip) = key.strip_prefix(IP_PREFIX) {
        return Cause::invalid(
            "spec.clusterIPs",
            ip,
            &format!("failed to allocate IP {ip}: provided IP is already allocated"),
        );
    }
    let port = key.strip_prefix(PORT_PREFIX).unwrap_or(key);
    let idx = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .position(|p| p.get("nodePort").map(|n| n.to_string()) == Some(port.to_string()))
        })
        .unwrap_or(0);
    Cause {
        reason: "FieldValueInvalid",
        field: format!("spec.ports[{idx}].nodePort"),
        message: format!("Invalid value: {port}: provided port is already allocated"),
    }
}

/// Service ClusterIPs and NodePorts as admission sees them (upstream does this in the
/// Service REST storage): an update keeps what was allocated and gets what it newly asks
/// for, user-chosen values must be in range and a ClusterIP may not change, and the keys a
/// Service holds are claimed in the transaction that stores it.
pub struct ServiceAllocation;

impl Plugin for ServiceAllocation {
    fn name(&self) -> &'static str {
        "ServiceAllocation"
    }

    fn handles(&self, _operation: Operation, rt: &ResourceType) -> bool {
        rt.group.is_empty() && rt.plural == "services"
    }

    fn mutate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        svc: &'a mut Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        if let Some(old) = old {
            keep_allocated(old, svc);
            assign(&attrs.state.service_ranges, svc);
        }
        Box::pin(async { Ok(()) })
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        svc: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        let result = (|| {
            if attrs.operation == Operation::Delete {
                return Ok(());
            }
            let rt = &attrs.target.rt;
            if let Some(old) = old {
                let ip = |v: &Value| {
                    v.pointer("/spec/clusterIP")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let (old_ip, new_ip) = (ip(old), ip(svc));
                let external =
                    svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
                if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip && !external {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        attrs.name,
                        vec![Cause::invalid(
                            "spec.clusterIPs[0]",
                            &new_ip,
                            "may not change once set",
                        )],
                    ));
                }
            }
            let causes = range_causes(&attrs.state.service_ranges, svc);
            if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::invalid(&rt.group, &rt.kind, attrs.name, causes))
            }
        })();
        Box::pin(async move { result })
    }

    fn claims(&self, svc: &Value) -> BTreeSet<String> {
        held(svc)
    }

    fn claim_prefixes(&self) -> &'static [&'static str] {
        &PREFIXES
    }

    fn allocate(
        &self,
        state: &AppState,
        svc: &mut Value,
        taken: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ApiError> {
        let chosen = assign_avoiding(&state.service_ranges, svc, taken);
        if chosen.full {
            return Err(ApiError::internal(
                "failed to allocate a ClusterIP or NodePort: range is full",
            ));
        }
        Ok(chosen.keys)
    }

    fn clash_cause(&self, svc: &Value, key: &str) -> Cause {
        taken_cause(svc, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_within_ranges_and_keeps_what_users_chose() {
        let r = Ranges::parse("10.0.0.0/24", "30000-30010").unwrap();
        for _ in 0..200 {
            let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30005}]}});
            let chosen = assign(&r, &mut svc);
            let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(
                r.contains(ip)
                    && ip != r.first()
                    && ip != Ipv4Addr::new(10, 0, 0, 0)
                    && ip != Ipv4Addr::new(10, 0, 0, 255)
            );
            let p0 = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
            assert!((30000..=30010).contains(&p0) && p0 != 30005);
            assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30005);
            assert_eq!(chosen.keys.len(), 2, "the user's port is not ours to retry");
            assert_eq!(held(&svc).len(), 3);
        }
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        assign(&r, &mut headless);
        assert!(held(&headless).is_empty());
        let out =
            json!({"spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 1, "nodePort": 80}]}});
        let causes = range_causes(&r, &out);
        assert_eq!(causes.len(), 2, "{causes:?}");
    }

    #[test]
    fn picks_around_what_is_taken_and_says_when_full() {
        let r = Ranges::parse("10.0.0.0/29", "30000-30001").unwrap();
        // 8 addresses: network, .1 (kubernetes), broadcast are never handed out: 5 usable.
        let mut taken: BTreeSet<String> =
            (2..6).map(|i| format!("{IP_PREFIX}10.0.0.{i}")).collect();
        taken.insert(format!("{PORT_PREFIX}30000"));
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let c = assign_avoiding(&r, &mut svc, &taken);
        assert!(!c.full);
        assert_eq!(svc["spec"]["clusterIP"], "10.0.0.6");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        taken.insert(format!("{IP_PREFIX}10.0.0.6"));
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(assign_avoiding(&r, &mut svc, &taken).full);
    }

    #[test]
    fn updates_keep_allocated_values() {
        let old = json!({"spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 90}]}});
        keep_allocated(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.0.0.7");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none());
    }
}
