//! kube-aggregator's autoregistration and availability, for this server: a Local APIService
//! for every group-version it serves (built-in ones and every served CRD version), kept in
//! step with the registry, and the `Available` condition of every APIService.
//!
//! Upstream writes `kube-aggregator.kubernetes.io/automanaged: onstart` on the built-in ones
//! (stale ones are removed at start only) and `true` on the CRDs' (removed as soon as the
//! version is no longer served); an APIService without the label is the user's and only its
//! status is ours. capstan proxies no aggregated API server, so an APIService that names a
//! Service is reported unavailable with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::rest::{self, DeleteOptions};
use crate::status::ApiError;
use crate::storage::decode_stored;
use crate::types::apiregistration::api_service::AVAILABLE;
use crate::types::registry::ResourceType;
use crate::types::Target;
use crate::{object, AppState};

pub const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";

/// kube-apiserver's priorities for its own group-versions (group minimum, version); a
/// built-in group-version missing here gets no APIService, as upstream skips it.
const PRIORITIES: &[(&str, &str, i64, i64)] = &[
    ("", "v1", 18000, 1),
    ("apiregistration.k8s.io", "v1", 18000, 15),
    ("apps", "v1", 17800, 15),
    ("events.k8s.io", "v1", 17750, 15),
    ("authentication.k8s.io", "v1", 17700, 15),
    ("authentication.k8s.io", "v1beta1", 17700, 9),
    ("authorization.k8s.io", "v1", 17600, 15),
    ("autoscaling", "v1", 17500, 15),
    ("autoscaling", "v2", 17500, 30),
    ("batch", "v1", 17400, 15),
    ("certificates.k8s.io", "v1", 17300, 15),
    ("networking.k8s.io", "v1", 17200, 15),
    ("policy", "v1", 17100, 15),
    ("rbac.authorization.k8s.io", "v1", 17000, 15),
    ("storage.k8s.io", "v1", 16800, 15),
    ("apiextensions.k8s.io", "v1", 16700, 15),
    ("admissionregistration.k8s.io", "v1", 16700, 15),
    ("scheduling.k8s.io", "v1", 16600, 15),
    ("coordination.k8s.io", "v1", 16500, 15),
    ("node.k8s.io", "v1", 16300, 15),
    ("discovery.k8s.io", "v1", 16200, 15),
];

/// A CRD's versions sort among other APIServices by their version strings
/// (crdregistration's fixed priorities).
const CRD_PRIORITY: (i64, i64) = (1000, 100);

/// What this server should have registered: name → (spec, automanaged label value).
fn desired(state: &AppState) -> BTreeMap<String, (Value, &'static str)> {
    let mut out = BTreeMap::new();
    for (group, version) in state.registry.group_versions() {
        let (priorities, label) = if state.registry.is_builtin_group_version(&group, &version) {
            match PRIORITIES
                .iter()
                .find(|(g, v, _, _)| *g == group && *v == version)
            {
                Some((_, _, g, v)) => ((*g, *v), "onstart"),
                None => continue,
            }
        } else {
            (CRD_PRIORITY, "true")
        };
        out.insert(
            format!("{version}.{group}"),
            (
                json!({"group": group, "version": version,
                       "groupPriorityMinimum": priorities.0, "versionPriority": priorities.1}),
                label,
            ),
        );
    }
    out
}

fn target(rt: &std::sync::Arc<ResourceType>, name: Option<&str>, status: bool) -> Target {
    Target {
        rt: rt.clone(),
        namespace: None,
        name: name.map(String::from),
        subresource: status.then(|| "status".to_string()),
        manager: None,
    }
}

/// The Available condition `obj` should carry; its transition time moves only with status.
async fn availability(state: &AppState, obj: &Value) -> Value {
    let (status, reason, message) = match obj.pointer("/spec/service").filter(|v| !v.is_null()) {
        None => (
            "True",
            "Local",
            "Local APIServices are always available".to_string(),
        ),
        Some(svc) => {
            let ns = svc["namespace"].as_str().unwrap_or("");
            let name = svc["name"].as_str().unwrap_or("");
            let service = match state.registry.find("", "v1", "services") {
                Some(rt) => crate::storage::read(state, &rt, Some(ns), name)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            match service {
                None => (
                    "False",
                    "ServiceNotFound",
                    format!("service/{name} in \"{ns}\" is not present"),
                ),
                Some(_) => (
                    "False",
                    "FailedDiscoveryCheck",
                    format!("service/{name} in \"{ns}\" is not reachable: capstan does not proxy aggregated API servers"),
                ),
            }
        }
    };
    let since = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == AVAILABLE))
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(object::now_rfc3339()));
    json!({"type": AVAILABLE, "status": status, "lastTransitionTime": since,
           "reason": reason, "message": message})
}

/// Write the Available condition when it differs from the stored one.
async fn report(
    state: &AppState,
    rt: &std::sync::Arc<ResourceType>,
    obj: Value,
    rev: i64,
) -> Result<(), ApiError> {
    let cond = availability(state, &obj).await;
    let mut conds: Vec<Value> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match conds.iter_mut().find(|c| c["type"] == AVAILABLE) {
        Some(c) if *c == cond => return Ok(()),
        Some(c) => *c = cond,
        None => conds.push(cond),
    }
    let mut new = obj.clone();
    new["status"] = json!({"conditions": conds});
    let name = object::name(&obj).to_string();
    rest::update_object(
        state,
        &target(rt, Some(&name), true),
        obj,
        rev,
        new,
        rev,
        false,
    )
    .await
    .map(|_| ())
}

/// One pass: create or correct what is missing, remove what is no longer served, report
/// availability. `at_start` also removes stale built-in (`onstart`) registrations.
/// Returns whether some APIService names a Service (so availability is rechecked).
pub async fn sync(state: &AppState, at_start: bool) -> Result<bool, ApiError> {
    let Some(rt) = state
        .registry
        .find("apiregistration.k8s.io", "v1", "apiservices")
    else {
        return Ok(false);
    };
    let want = desired(state);
    let resp = state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(
            rt.key_prefix(),
        ))))
        .await?;
    let mut have = BTreeMap::new();
    for kv in &resp.kvs {
        let obj = decode_stored(kv)?;
        have.insert(object::name(&obj).to_string(), (obj, kv.mod_revision));
    }
    let mut remote = false;
    for (name, (spec, label)) in &want {
        let (obj, rev) = match have.remove(name) {
            None => {
                let obj = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                                 "metadata": {"name": name, "labels": {AUTOMANAGED: label}},
                                 "spec": spec});
                match rest::create_object(state, &target(&rt, None, false), obj, false).await {
                    Ok(created) => created,
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Some((obj, rev))
                if object::labels(&obj).is_some_and(|l| l.contains_key(AUTOMANAGED)) =>
            {
                // Ours: a user's edit of the spec is put back, as autoregister does.
                let spec_now = obj.get("spec").cloned().unwrap_or(json!({}));
                let drifted = [
                    "group",
                    "version",
                    "groupPriorityMinimum",
                    "versionPriority",
                ]
                .iter()
                .any(|k| spec_now.get(k) != spec.get(k))
                    || spec_now.get("service").is_some_and(|s| !s.is_null());
                if drifted {
                    let mut new = obj.clone();
                    new["spec"] = spec.clone();
                    let t = target(&rt, Some(name), false);
                    let updated = rest::update_object(state, &t, obj, rev, new, rev, false).await?;
                    let rev = object::meta_str(&updated, "resourceVersion")
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(rev);
                    (updated, rev)
                } else {
                    (obj, rev)
                }
            }
            Some(user_owned) => user_owned,
        };
        remote |= obj.pointer("/spec/service").is_some_and(|s| !s.is_null());
        report(state, &rt, obj, rev).await?;
    }
    // What remains is registered but not served here.
    for (name, (obj, rev)) in have {
        let label = object::labels(&obj)
            .and_then(|l| l.get(AUTOMANAGED))
            .and_then(Value::as_str)
            .map(str::to_string);
        match label.as_deref() {
            Some("true") => {}
            Some(_) if at_start => {}
            Some(_) => continue,
            None => {
                remote |= obj.pointer("/spec/service").is_some_and(|s| !s.is_null());
                report(state, &rt, obj, rev).await?;
                continue;
            }
        }
        let t = target(&rt, Some(&name), false);
        match rest::delete_object(state, &t, &name, &DeleteOptions::default()).await {
            Ok(_) => {
                tracing::info!(verb = "delete", resource = "apiservices", name = %name, "group-version no longer served")
            }
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(remote)
}

/// Run the loop: a pass at start, then one whenever the served types or an APIService
/// change, and, while some APIService names a Service, whenever a Service changes.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut types = state.registry.subscribe();
        let mut at_start = true;
        let mut failures = 0u32;
        loop {
            let from = state.store.current_revision().await.unwrap_or(0);
            types.mark_unchanged();
            let (remote, retry) = match sync(&state, at_start).await {
                Ok(remote) => {
                    at_start = false;
                    failures = 0;
                    (remote, None)
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_millis(200 << failures.min(8));
                    tracing::warn!(error = %e.message, retry_in_ms = wait.as_millis() as u64, "APIService registration failed");
                    (true, Some(wait))
                }
            };
            let Some(rt) = state
                .registry
                .find("apiregistration.k8s.io", "v1", "apiservices")
            else {
                return;
            };
            let watch = state
                .store
                .watch(KeyRange::prefix(Bytes::from(rt.key_prefix())), from + 1)
                .await;
            let Ok(mut watch) = watch else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let services = match state.registry.find("", "v1", "services") {
                Some(svc) if remote => state
                    .store
                    .watch(KeyRange::prefix(Bytes::from(svc.key_prefix())), from + 1)
                    .await
                    .ok(),
                _ => None,
            };
            let service_changed = async {
                match services {
                    Some(mut w) => {
                        if w.next().await.is_none() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match retry {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = types.changed() => if changed.is_err() { return },
                event = watch.next() => if event.is_none() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
                _ = service_changed => {}
                _ = timer => {}
            }
            // Let a burst (a CRD with several versions, our own writes) settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}
