//! The EndpointSlice mirroring controller (upstream's pkg/controller/endpointslicemirroring):
//! the Endpoints a user writes for a Service without a selector, copied into EndpointSlices.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_slim::Action;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::context::Context;
use crate::endpointslice::{delete_slices, MANAGED_BY_LABEL};
use crate::events::{EventType, Recorder};
use crate::owners;
use crate::service_pods::{SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION};

pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints labelled with this set to "true" are not mirrored (upstream's LabelSkipMirror).
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints used as leader-election locks are not endpoints at all.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Addresses mirrored per Endpoints subset (upstream's `--mirroring-max-endpoints-per-subset`
/// default); the rest are skipped with a Warning event.
const MAX_PER_SUBSET: usize = 1000;

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
    recorder: Recorder,
    /// Endpoints (namespace, name) that have, or may have, mirrored slices: the only ones a
    /// sync of a selecting Service's Endpoints needs to list slices for.
    mirrored: Mutex<HashSet<(String, String)>>,
}

pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(60)),
        recorder: ctx.recorder("endpointslice-mirroring-controller"),
        mirrored: Mutex::new(HashSet::new()),
    });
    let noted = lp.clone();
    // Our slices, remembered by their Endpoints, so that one deleted or edited by hand is put
    // back and ones left from before a restart are found.
    let slices = capstan_slim::watcher(
        Api::<EndpointSlice>::all(ctx.client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .touched_objects()
    .inspect(move |s| {
        if let Ok(slice) = s {
            if let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL) {
                noted.note(&slice.namespace().unwrap_or_default(), svc);
            }
        }
    });
    capstan_slim::controller(
        Api::<Endpoints>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    // A Service gaining or losing its selector (or going) changes what its Endpoints mean.
    .watches_stream(
        capstan_slim::touched(
            Api::<Service>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
        |svc: Service| {
            Some(ObjectRef::new(&svc.name_any()).within(&svc.namespace().unwrap_or_default()))
        },
    )
    .owns_stream(slices)
    .run(reconcile, error_policy, lp)
    .await;
}

impl Loop {
    fn note(&self, ns: &str, name: &str) {
        if let Ok(mut m) = self.mirrored.lock() {
            m.insert((ns.to_string(), name.to_string()));
        }
    }
    fn forget(&self, ns: &str, name: &str) {
        if let Ok(mut m) = self.mirrored.lock() {
            m.remove(&(ns.to_string(), name.to_string()));
        }
    }
    fn has_mirrored(&self, ns: &str, name: &str) -> bool {
        self.mirrored
            .lock()
            .map(|m| m.contains(&(ns.to_string(), name.to_string())))
            .unwrap_or(true)
    }
}

fn error_policy(ep: Arc<Endpoints>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let key = format!("{}/{}", ep.namespace().unwrap_or_default(), ep.name_any());
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(endpoints = %key, attempts, error = %err, "mirroring endpoints failed; retrying");
    Action::requeue(delay)
}

/// Upstream's shouldMirror: not opted out, not a leader-election lock.
fn should_mirror(ep: &Endpoints) -> bool {
    ep.labels().get(SKIP_MIRROR_LABEL).map(String::as_str) != Some("true")
        && !ep.annotations().contains_key(LEADER_ANNOTATION)
}

/// A slice group: the address type and the ports its endpoints serve.
type GroupKey = (&'static str, String);

/// What the Endpoints ask for: endpoints by address type and port set, and how many
/// addresses were invalid or over the per-subset limit.
#[derive(Default)]
struct Desired {
    groups: BTreeMap<GroupKey, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)>,
    invalid: usize,
    skipped: usize,
}

fn slice_ports(subset: &EndpointSubset) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = subset
        .ports
        .iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    ports
}

/// The group key of a port set: the same set in any order is one group.
fn ports_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

fn address_type(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// One address as an endpoint: the IP written canonically, as upstream re-stringifies it.
fn endpoint(address: &EndpointAddress, ip: &IpAddr, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    }
}

fn desired(ep: &Endpoints) -> Desired {
    let mut d = Desired::default();
    for subset in ep.subsets.iter().flatten() {
        let ports = slice_ports(subset);
        let key = ports_key(&ports);
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut added = 0;
        for (address, is_ready) in ready.chain(not_ready) {
            if added >= MAX_PER_SUBSET {
                d.skipped += 1;
                continue;
            }
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                d.invalid += 1;
                continue;
            };
            let group = d
                .groups
                .entry((address_type(&ip), key.clone()))
                .or_insert_with(|| (ports.clone(), BTreeMap::new()));
            group
                .1
                .insert(ip.to_string(), endpoint(address, &ip, is_ready));
            added += 1;
        }
    }
    d
}

/// Labels and annotations of a mirrored slice: the Endpoints' own, less what describes
/// only the Endpoints object, plus the slice's service and manager.
fn slice_meta(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = ep.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), ep.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let annotations = ep
        .annotations()
        .iter()
        .filter(|(k, _)| {
            k.as_str() != TRIGGER_TIME_ANNOTATION && k.as_str() != LAST_APPLIED_ANNOTATION
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (labels, annotations)
}

async fn reconcile(ep: Arc<Endpoints>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let key = format!("{ns}/{name}");
    let service = Api::<Service>::namespaced(lp.ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    // Upstream mirrors only for an existing Service whose selector is unset: a selecting
    // Service's Endpoints and slices are both the other controllers' work.
    let mirror = should_mirror(&ep)
        && service
            .as_ref()
            .is_some_and(|s| s.spec.as_ref().is_none_or(|spec| spec.selector.is_none()));
    if !mirror && !lp.has_mirrored(&ns, &name) {
        return Ok(Action::await_change());
    }
    let api: Api<EndpointSlice> = Api::namespaced(lp.ctx.client.clone(), &ns);
    let existing: Vec<EndpointSlice> = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?
        .items;
    if !mirror {
        delete_slices(&api, &existing).await?;
        lp.forget(&ns, &name);
        lp.backoff.reset(&key);
        tracing::debug!(endpoints = %key, removed = existing.len(), "mirrored endpoint slices removed");
        return Ok(Action::await_change());
    }
    lp.note(&ns, &name);
    let want = desired(&ep);
    if want.invalid > 0 {
        let msg = format!(
            "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
            want.invalid
        );
        lp.recorder
            .record(ep.as_ref(), EventType::Warning, "InvalidIPAddress", &msg)
            .await;
    }
    if want.skipped > 0 {
        let msg = format!(
            "A max of {MAX_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
            want.skipped
        );
        lp.recorder
            .record(
                ep.as_ref(),
                EventType::Warning,
                "TooManyAddressesToMirror",
                &msg,
            )
            .await;
    }
    let (labels, annotations) = slice_meta(&ep);
    // Existing slices by group; the first of a group is kept, the rest are spare.
    let mut by_group: BTreeMap<GroupKey, Vec<EndpointSlice>> = BTreeMap::new();
    let mut spare: Vec<EndpointSlice> = Vec::new();
    let mut sorted = existing;
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for slice in sorted {
        let at: &'static str = if slice.address_type == "IPv6" {
            "IPv6"
        } else {
            "IPv4"
        };
        let k = (at, ports_key(slice.ports.as_deref().unwrap_or_default()));
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            spare.push(slice);
            continue;
        }
        by_group.entry(k).or_default().push(slice);
    }
    let mut to_create: Vec<EndpointSlice> = Vec::new();
    for (k, (ports, eps)) in &want.groups {
        let endpoints: Vec<Endpoint> = eps.values().take(MAX_PER_SUBSET).cloned().collect();
        let mut have = by_group.remove(k).unwrap_or_default();
        let first = if have.is_empty() {
            None
        } else {
            Some(have.remove(0))
        };
        spare.extend(have);
        match first {
            Some(mut slice) => {
                let same = slice.endpoints == endpoints
                    && slice.ports.as_ref() == Some(ports)
                    && slice.metadata.labels.as_ref() == Some(&labels)
                    && slice.metadata.annotations.clone().unwrap_or_default() == annotations
                    && owners::is_controlled_by(&slice.metadata, ep.uid().as_deref().unwrap_or(""));
                if same {
                    continue;
                }
                slice.endpoints = endpoints;
                slice.ports = Some(ports.clone());
                slice.metadata.labels = Some(labels.clone());
                slice.metadata.annotations = Some(annotations.clone());
                slice.metadata.owner_references = Some(vec![owners::controller_ref(ep.as_ref())]);
                api.replace(&slice.name_any(), &PostParams::default(), &slice)
                    .await?;
            }
            None => to_create.push(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: Some(ns.clone()),
                    labels: Some(labels.clone()),
                    annotations: Some(annotations.clone()),
                    owner_references: Some(vec![owners::controller_ref(ep.as_ref())]),
                    ..Default::default()
                },
                address_type: k.0.into(),
                endpoints,
                ports: Some(ports.clone()),
            }),
        }
    }
    spare.extend(by_group.into_values().flatten());
    // Upstream's recycleSlices: a slice that would be deleted is rewritten instead of
    // creating a new one of the same address type.
    for mut new in to_create {
        let reuse = spare
            .iter()
            .position(|s| s.address_type == new.address_type);
        match reuse.map(|i| spare.remove(i)) {
            Some(old) => {
                new.metadata.generate_name = None;
                new.metadata.name = old.metadata.name.clone();
                new.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(&new.name_any(), &PostParams::default(), &new)
                    .await?;
            }
            // No new slices for Endpoints on their way out.
            None if ep.metadata.deletion_timestamp.is_some() => {}
            None => match api.create(&PostParams::default(), &new).await {
                Ok(_) => {}
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("because it is being terminated") =>
                {
                    return Ok(Action::await_change())
                }
                Err(e) => return Err(e),
            },
        }
    }
    delete_slices(&api, &spare).await?;
    lp.backoff.reset(&key);
    let total: usize = want.groups.values().map(|g| g.1.len()).sum();
    tracing::debug!(endpoints = %key, addresses = total, "endpoints mirrored to endpoint slices");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EndpointPort as CorePort;

    fn subset(ready: &[&str], not_ready: &[&str], ports: &[(&str, i32)]) -> EndpointSubset {
        let addr = |ip: &&str| EndpointAddress {
            ip: ip.to_string(),
            ..Default::default()
        };
        EndpointSubset {
            addresses: Some(ready.iter().map(addr).collect()),
            not_ready_addresses: Some(not_ready.iter().map(addr).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| CorePort {
                        name: Some(n.to_string()),
                        port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn subsets_group_by_address_type_and_port_set() {
        let ep = Endpoints {
            subsets: Some(vec![
                subset(
                    &["10.0.0.1", "fd00::1"],
                    &["10.0.0.2"],
                    &[("a", 80), ("b", 81)],
                ),
                // The same port set in another order joins the first group.
                subset(&["10.0.0.3"], &[], &[("b", 81), ("a", 80)]),
                subset(&["10.0.0.4", "not-an-ip"], &[], &[("c", 90)]),
            ]),
            ..Default::default()
        };
        let d = desired(&ep);
        assert_eq!(d.invalid, 1);
        assert_eq!(
            d.groups.len(),
            3,
            "{:?}",
            d.groups.keys().collect::<Vec<_>>()
        );
        let v4: Vec<_> = d
            .groups
            .iter()
            .filter(|((t, _), _)| *t == "IPv4")
            .map(|(_, (_, eps))| eps.keys().cloned().collect::<Vec<_>>())
            .collect();
        assert!(v4.contains(&vec![
            "10.0.0.1".to_string(),
            "10.0.0.2".into(),
            "10.0.0.3".into()
        ]));
        let ready = |ip: &str| {
            d.groups
                .values()
                .find_map(|(_, eps)| eps.get(ip))
                .and_then(|e| e.conditions.as_ref()?.ready)
        };
        assert_eq!(ready("10.0.0.1"), Some(true));
        assert_eq!(ready("10.0.0.2"), Some(false));
        assert_eq!(ready("fd00::1"), Some(true));
    }

    #[test]
    fn at_most_the_limit_is_mirrored_per_subset() {
        let ips: Vec<String> = (0..MAX_PER_SUBSET + 5)
            .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let ep = Endpoints {
            subsets: Some(vec![subset(&refs, &[], &[("", 80)])]),
            ..Default::default()
        };
        let d = desired(&ep);
        assert_eq!(d.skipped, 5);
        assert_eq!(
            d.groups.values().map(|g| g.1.len()).sum::<usize>(),
            MAX_PER_SUBSET
        );
    }

    #[test]
    fn opted_out_and_lock_endpoints_are_not_mirrored() {
        let mut ep = Endpoints::default();
        assert!(should_mirror(&ep));
        ep.labels_mut()
            .insert(SKIP_MIRROR_LABEL.into(), "true".into());
        assert!(!should_mirror(&ep));
        let mut lock = Endpoints::default();
        lock.annotations_mut()
            .insert(LEADER_ANNOTATION.into(), "{}".into());
        assert!(!should_mirror(&lock));
    }

    #[test]
    fn slices_carry_the_endpoints_labels_but_not_their_bookkeeping() {
        let mut ep = Endpoints::default();
        ep.metadata.name = Some("ext".into());
        ep.labels_mut().insert("team".into(), "a".into());
        ep.labels_mut()
            .insert(MANAGED_BY_LABEL.into(), "someone".into());
        ep.annotations_mut().insert("note".into(), "x".into());
        ep.annotations_mut()
            .insert(TRIGGER_TIME_ANNOTATION.into(), "t".into());
        ep.annotations_mut()
            .insert(LAST_APPLIED_ANNOTATION.into(), "{}".into());
        let (labels, annotations) = slice_meta(&ep);
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[SERVICE_NAME_LABEL], "ext");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["note"], "x");
    }
}
