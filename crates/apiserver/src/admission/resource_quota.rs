//! The ResourceQuota admission plugin (upstream's plugin/pkg/admission/resourcequota): a
//! create — or an update that grows what the object uses (a claim resized, a Service made
//! a NodePort) — that would take a namespace's usage past a quota's `status.hard` is
//! refused (403 `exceeded quota: …`); one that fits is charged to the quota's `status.used`
//! first (compare-and-swap on the quota, re-read on a clash). The controller keeps `used`
//! true.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest, StoreExt, Txn, TxnResponse};
use serde_json::{json, Value};

use crate::admission::{forbidden, Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::{decode_for, encode_as_stored, key};
use crate::types::quantity::{Format, Quantity};
use crate::types::registry::ResourceType;

/// Compare-and-swap attempts on one quota before giving up (409, as upstream's retries).
const CHARGE_ATTEMPTS: usize = 8;

pub struct ResourceQuota;

impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation != Operation::Delete && rt.namespaced
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            if attrs.target.subresource.is_some() {
                return Ok(());
            }
            let rt = &attrs.target.rt;
            let delta = match (attrs.operation, old) {
                (Operation::Update, Some(old)) => {
                    // What the update changes, as upstream's evaluators: zero changes need
                    // no quota, shrinking ones are given back by the controller's count.
                    let before = usage_of(rt, old);
                    let mut d = usage_of(rt, obj);
                    for (k, n) in &before {
                        *d.entry(k.clone()).or_default() -= n;
                    }
                    d.retain(|_, n| *n > 0);
                    if d.is_empty() {
                        return Ok(());
                    }
                    d
                }
                _ => usage_of(rt, obj),
            };
            check_and_charge(attrs, obj, &delta).await
        })
    }
}

/// Milli-units per resource name (`pods`, `requests.cpu`, `count/deployments.apps`).
pub type Usage = BTreeMap<String, i128>;

fn milli_of(v: &Value) -> Option<i128> {
    v.as_str()
        .and_then(Quantity::parse)
        .map(|q| q.milli())
        .or_else(|| v.as_i64().map(|n| i128::from(n) * 1000))
}

/// Whether a resource's amounts are written in binary units (bytes) or decimal ones.
fn format_of(resource: &str) -> Format {
    let bytes = ["memory", "storage", "ephemeral-storage"];
    if bytes
        .iter()
        .any(|b| resource == *b || resource.ends_with(&format!(".{b}")))
        || resource.starts_with("hugepages-")
    {
        Format::BinarySi
    } else {
        Format::DecimalSi
    }
}

/// `n` milli-units of `resource` as upstream prints a quantity.
pub fn quantity_text(resource: &str, n: i128) -> String {
    Quantity::from_milli(n, format_of(resource)).canonical()
}

fn add(u: &mut Usage, k: &str, n: i128) {
    *u.entry(k.to_string()).or_default() += n;
}

/// A container's requests or limits.
fn resources<'v>(c: &'v Value, which: &str) -> Option<&'v serde_json::Map<String, Value>> {
    c.pointer(&format!("/resources/{which}"))
        .and_then(Value::as_object)
}

/// upstream's PodRequests/PodLimits: containers summed, init containers' maximum, overhead.
fn pod_sum(spec: &Value, which: &str) -> Usage {
    let mut sum = Usage::new();
    for c in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in resources(c, which).into_iter().flatten() {
            add(&mut sum, k, milli_of(v).unwrap_or(0));
        }
    }
    for c in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, v) in resources(c, which).into_iter().flatten() {
            let n = milli_of(v).unwrap_or(0);
            let e = sum.entry(k.clone()).or_default();
            *e = (*e).max(n);
        }
    }
    for (k, v) in spec
        .get("overhead")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        add(&mut sum, k, milli_of(v).unwrap_or(0));
    }
    sum
}

/// What creating `obj` of type `rt` adds to a namespace's usage (upstream's evaluators:
/// pods, services, persistentvolumeclaims, the legacy object counts and `count/*`).
pub fn usage_of(rt: &ResourceType, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let count_key = if rt.group.is_empty() {
        format!("count/{}", rt.plural)
    } else {
        format!("count/{}.{}", rt.plural, rt.group)
    };
    add(&mut u, &count_key, 1000);
    if !rt.group.is_empty() {
        return u;
    }
    match &*rt.plural {
        "pods" => {
            let terminal = matches!(
                obj.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if terminal {
                return Usage::from([(count_key, 1000)]);
            }
            add(&mut u, "pods", 1000);
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            for (k, n) in pod_sum(&spec, "requests") {
                add(&mut u, &format!("requests.{k}"), n);
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    add(&mut u, &k, n);
                }
            }
            for (k, n) in pod_sum(&spec, "limits") {
                add(&mut u, &format!("limits.{k}"), n);
            }
        }
        "services" => {
            add(&mut u, "services", 1000);
            let type_ = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if type_ == "LoadBalancer" {
                add(&mut u, "services.loadbalancers", 1000);
            }
            if type_ == "NodePort" || type_ == "LoadBalancer" {
                add(&mut u, "services.nodeports", 1000 * ports as i128);
            }
        }
        "persistentvolumeclaims" => {
            add(&mut u, "persistentvolumeclaims", 1000);
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(milli_of)
                .unwrap_or(0);
            add(&mut u, "requests.storage", storage);
            if let Some(sc) = obj
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
            {
                let prefix = format!("{sc}.storageclass.storage.k8s.io/");
                add(&mut u, &format!("{prefix}requests.storage"), storage);
                add(&mut u, &format!("{prefix}persistentvolumeclaims"), 1000);
            }
        }
        p @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
            add(&mut u, p, 1000)
        }
        _ => {}
    }
    u
}

/// upstream's pod Constraints: quota on cpu or memory needs every container to say it.
fn missing_constraints(
    rt: &ResourceType,
    obj: &Value,
    restricted: &BTreeSet<String>,
) -> Option<String> {
    if !(rt.group.is_empty() && rt.plural == "pods") {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for required in [
        "cpu",
        "limits.cpu",
        "limits.memory",
        "memory",
        "requests.cpu",
        "requests.memory",
    ] {
        if !restricted.contains(required) {
            continue;
        }
        let (which, res) = match required.split_once('.') {
            Some((w, r)) => (w, r),
            None => ("requests", required),
        };
        for list in ["containers", "initContainers"] {
            for c in obj
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !resources(c, which).is_some_and(|m| m.contains_key(res)) {
                    missing.entry(required).or_default().insert(
                        c.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

fn pretty(u: &Usage, keys: &BTreeSet<String>) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", quantity_text(k, u.get(k).copied().unwrap_or(0))))
        .collect::<Vec<_>>()
        .join(",")
}

fn usage_map(quota: &Value, which: &str) -> Usage {
    quota
        .pointer(&format!("/status/{which}"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), milli_of(v)?)))
        .collect()
}

/// The quotas of a namespace with their mod revisions.
async fn quotas(
    attrs: &Attributes<'_>,
    quota_rt: &ResourceType,
    ns: &str,
) -> Result<Vec<(Value, i64)>, ApiError> {
    let prefix = format!("{}{ns}/", quota_rt.key_prefix());
    let resp = attrs
        .state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
        .await?;
    resp.kvs
        .iter()
        .map(|kv| Ok((decode_for(quota_rt, kv)?, kv.mod_revision)))
        .collect()
}

async fn check_and_charge(
    attrs: &Attributes<'_>,
    obj: &Value,
    delta: &Usage,
) -> Result<(), ApiError> {
    let state = attrs.state;
    let Some(quota_rt) = state.registry.find("", "v1", "resourcequotas") else {
        return Ok(());
    };
    let ns = crate::object::namespace(obj).to_string();
    let creating = attrs.operation == Operation::Create;
    let mut pending = quotas(attrs, &quota_rt, &ns).await?;
    let mut attempts = 0;
    while let Some((quota, rev)) = pending.pop() {
        let name = crate::object::name(&quota).to_string();
        // A scoped quota counts only the objects all its scopes match.
        if !crate::types::core::resource_quota::scopes_match(&quota, &attrs.target.rt, obj) {
            continue;
        }
        let hard = usage_map(&quota, "hard");
        // Only what this quota limits and this object uses (upstream's MatchingResources).
        let restricted: BTreeSet<String> = hard
            .keys()
            .filter(|k| delta.contains_key(*k) || (creating && is_compute_of(k, &attrs.target.rt)))
            .cloned()
            .collect();
        if restricted.is_empty() {
            continue;
        }
        if let Some(why) = creating
            .then(|| missing_constraints(&attrs.target.rt, obj, &restricted))
            .flatten()
        {
            return Err(forbidden(attrs, &format!("failed quota: {name}: {why}")));
        }
        let used = usage_map(&quota, "used");
        let unknown: Vec<&String> = restricted
            .iter()
            .filter(|k| !used.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(forbidden(
                attrs,
                &format!(
                    "status unknown for quota: {name}, resources: {}",
                    list.join(",")
                ),
            ));
        }
        let mut new_used = used.clone();
        let mut exceeded = BTreeSet::new();
        for k in &restricted {
            let n = delta.get(k).copied().unwrap_or(0);
            let total = used.get(k).copied().unwrap_or(0) + n;
            if n > 0 && total > hard.get(k).copied().unwrap_or(0) {
                exceeded.insert(k.clone());
            }
            new_used.insert(k.clone(), total);
        }
        if !exceeded.is_empty() {
            return Err(forbidden(
                attrs,
                &format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    pretty(delta, &exceeded),
                    pretty(&used, &exceeded),
                    pretty(&hard, &exceeded)
                ),
            ));
        }
        if attrs.dry_run || new_used == used {
            continue;
        }
        // Charge the quota before the object is stored, as upstream; if the object's write
        // then fails, the controller's next count gives the charge back.
        let mut charged = quota.clone();
        let used_json: serde_json::Map<String, Value> = new_used
            .iter()
            .map(|(k, n)| (k.clone(), json!(quantity_text(k, *n))))
            .collect();
        charged["status"]["used"] = Value::Object(used_json);
        let k = key(&quota_rt, Some(&ns), &name);
        let txn = Txn::new().when(Bytes::from(k.clone()), rev).put(
            Bytes::from(k.clone()),
            encode_as_stored(&quota_rt, &charged)?,
        );
        match state.store.txn(txn).await? {
            TxnResponse::Succeeded { .. } => {}
            TxnResponse::Failed { .. } => {
                attempts += 1;
                if attempts >= CHARGE_ATTEMPTS {
                    return Err(ApiError::conflict(
                        "",
                        "resourcequotas",
                        &name,
                        "the quota kept changing while being charged; try again",
                    ));
                }
                // Someone else charged it meanwhile: read it again and re-check.
                if let Some(kv) = state.store.get(k.as_bytes()).await? {
                    pending.push((decode_for(&quota_rt, &kv)?, kv.mod_revision));
                }
            }
        }
    }
    Ok(())
}

/// cpu/memory quota keys a pod is measured against even when it asks for none of them
/// (so the "must specify" rule can fire).
fn is_compute_of(k: &str, rt: &ResourceType) -> bool {
    rt.group.is_empty()
        && rt.plural == "pods"
        && matches!(
            k,
            "cpu" | "memory" | "requests.cpu" | "requests.memory" | "limits.cpu" | "limits.memory"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstream() {
        assert_eq!(quantity_text("pods", 2000), "2");
        assert_eq!(quantity_text("requests.cpu", 1500), "1500m");
        assert_eq!(
            quantity_text("requests.memory", 256 * 1024 * 1024 * 1000),
            "256Mi"
        );
        let u = Usage::from([("pods".to_string(), 1000)]);
        assert_eq!(pretty(&u, &BTreeSet::from(["pods".to_string()])), "pods=1");
    }
}
