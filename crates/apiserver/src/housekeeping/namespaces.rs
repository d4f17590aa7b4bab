//! Namespace lifecycle: the system namespaces exist from the start, and a namespace marked
//! for deletion (Terminating) is emptied of every namespaced object and then removed.
//! Failures are logged and retried on the next pass; nothing is fire-and-forget.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use capstan_store::{Txn, TxnResponse};
use serde_json::{json, Value};

use crate::rest::list::{read_page, Selectors};
use crate::rest::{self, DeleteOptions};
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespace_target(state: &AppState, name: Option<&str>) -> Result<Target, ApiError> {
    let rt = state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    Ok(Target {
        rt,
        namespace: None,
        name: name.map(String::from),
        subresource: None,
        manager: None,
    })
}

pub async fn ensure_system_namespaces(state: &AppState) -> Result<(), ApiError> {
    let t = namespace_target(state, None)?;
    for ns in SYSTEM_NAMESPACES {
        match rest::create_object(state, &t, json!({"metadata": {"name": ns}}), false).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One pass over terminating namespaces. Returns how many are still terminating.
pub async fn reconcile(state: &AppState) -> Result<usize, ApiError> {
    let t = namespace_target(state, None)?;
    let prefix = t.rt.key_prefix();
    let page = read_page(
        state,
        &t.rt,
        &prefix,
        &Selectors::everything(),
        None,
        prefix.as_bytes().to_vec(),
        None,
    )
    .await?;
    let mut pending = 0;
    for ns_obj in page
        .items
        .iter()
        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some())
    {
        let ns = crate::object::name(ns_obj).to_string();
        let mut remaining = 0usize;
        // Several versions of a type share one storage prefix: sweep each prefix once.
        let mut swept = std::collections::HashSet::new();
        for rt in state
            .registry
            .all()
            .iter()
            .filter(|rt| rt.namespaced && swept.insert(rt.key_prefix()))
        {
            let target = Target {
                rt: rt.clone(),
                namespace: Some(ns.clone()),
                name: None,
                subresource: None,
                manager: None,
            };
            let coll = crate::rest::list::collection_prefix(&target);
            let objs = read_page(
                state,
                rt,
                &coll,
                &Selectors::everything(),
                None,
                coll.as_bytes().to_vec(),
                None,
            )
            .await?;
            for obj in objs.items {
                remaining += 1;
                let name = crate::object::name(&obj).to_string();
                let opts = DeleteOptions {
                    dry_run: false,
                    uid: None,
                    resource_version: None,
                    grace_period_seconds: None,
                    // As upstream's namespace deleter: dependents go in the background.
                    propagation: Some(rest::Propagation::Background),
                    orphan_dependents: None,
                };
                match rest::delete_object(
                    state,
                    &Target {
                        name: Some(name.clone()),
                        ..target.clone()
                    },
                    &name,
                    &opts,
                )
                .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == StatusCode::NOT_FOUND => {}
                    Err(e) => {
                        tracing::warn!(namespace = %ns, resource = rt.plural, name = %name, error = %e.message, "namespace cleanup: delete failed")
                    }
                }
            }
        }
        if remaining > 0 {
            pending += 1;
            continue;
        }
        // Empty: drop the "kubernetes" finalizer; the namespace goes with its last finalizer.
        let spec_finalizers: Vec<Value> = ns_obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let others: Vec<&Value> = spec_finalizers
            .iter()
            .filter(|f| f.as_str() != Some("kubernetes"))
            .collect();
        if !others.is_empty() || !crate::object::finalizers(ns_obj).is_empty() {
            pending += 1;
            continue;
        }
        let rev: i64 = crate::object::meta_str(ns_obj, "resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let key = rest::key(&t.rt, None, &ns);
        match state
            .store
            .txn(
                Txn::new()
                    .when(Bytes::from(key.clone()), rev)
                    .delete(Bytes::from(key)),
            )
            .await?
        {
            TxnResponse::Succeeded { .. } => tracing::info!(namespace = %ns, "namespace deleted"),
            TxnResponse::Failed { .. } => pending += 1,
        }
    }
    Ok(pending)
}

/// Runs forever: frequent passes while something is terminating, a slow heartbeat otherwise,
/// with back-off on errors.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let delay = match reconcile(&state).await {
                Ok(0) => {
                    backoff = Duration::from_millis(200);
                    Duration::from_millis(500)
                }
                Ok(_) => Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e.message, "namespace lifecycle pass failed");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::time::sleep(delay).await;
        }
    })
}
