//! The CRD control loop: keeps the registry and OpenAPI in step with the stored CRDs, reports
//! NamesAccepted/Established/Terminating in their status, and empties a deleted CRD's API.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest, Txn};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::object;
use crate::rest::{decode_stored, encode_for_store};
use crate::status::ApiError;
use crate::types::crd::{self, CLEANUP_FINALIZER};
use crate::types::registry::ResourceType;
use crate::AppState;

pub const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// What one pass found still to do.
#[derive(Default)]
pub struct Outcome {
    /// Some CRD is waiting for its custom resources to go.
    pub terminating: bool,
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, old: &Value) -> Value {
    // The transition time moves only when the status does.
    let since = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(object::now_rfc3339()));
    json!({"type": type_, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
}

/// Run one reconciliation over every stored CRD. Serialised: the handlers call it after a
/// CRD write (so the next request sees the new API) and the loop calls it on every change.
pub async fn sync(state: &AppState) -> Result<Outcome, ApiError> {
    let _one_at_a_time = state.crd_sync.lock().await;
    let resp = state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from_static(
            PREFIX.as_bytes(),
        ))))
        .await?;
    let mut crds = Vec::new();
    for kv in &resp.kvs {
        crds.push((decode_stored(kv)?, kv.mod_revision, kv.key.clone()));
    }
    // Older CRDs keep their names when a newer one asks for the same.
    crds.sort_by(|a, b| {
        let ts = |v: &Value| {
            object::meta_str(v, "creationTimestamp")
                .unwrap_or("")
                .to_string()
        };
        ts(&a.0)
            .cmp(&ts(&b.0))
            .then(object::name(&a.0).cmp(object::name(&b.0)))
    });
    let builtin: HashSet<(String, String)> = state
        .registry
        .all()
        .iter()
        .filter(|t| t.custom.is_none())
        .flat_map(|t| {
            [
                (t.group.clone(), t.plural.clone()),
                (t.group.clone(), format!("kind:{}", t.kind)),
            ]
        })
        .collect();
    let mut taken = builtin;
    let current = state.registry.all();
    let mut served: Vec<ResourceType> = Vec::new();
    let mut outcome = Outcome::default();
    for (crd_obj, rev, key) in &crds {
        let group = crd_obj
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let plural = crd_obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = crd_obj
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let plural_conflict = taken.contains(&(group.clone(), plural.clone()));
        let kind_conflict = taken.contains(&(group.clone(), format!("kind:{kind}")));
        let accepted = !plural_conflict && !kind_conflict;
        if accepted {
            taken.insert((group.clone(), plural.clone()));
            taken.insert((group.clone(), format!("kind:{kind}")));
            // An unchanged CRD keeps the entries (parsed schemas, CEL) it already has.
            let hash = crd::spec_hash(crd_obj);
            let name = object::name(crd_obj);
            let kept: Vec<ResourceType> = current
                .iter()
                .filter(|t| {
                    t.custom
                        .as_ref()
                        .is_some_and(|c| c.crd_name == name && c.spec_hash == hash)
                })
                .map(|t| (**t).clone())
                .collect();
            if kept.is_empty() {
                served.extend(crd::resource_types(crd_obj));
            } else {
                served.extend(kept);
            }
        }
        let terminating = crd_obj.pointer("/metadata/deletionTimestamp").is_some();
        if terminating {
            outcome.terminating = true;
            cleanup(state, crd_obj, *rev, key).await?;
            continue;
        }
        let (reason, message) = if plural_conflict {
            ("PluralConflict", format!("\"{plural}\" is already in use"))
        } else if kind_conflict {
            ("KindConflict", format!("{kind:?} is already in use"))
        } else {
            ("NoConflicts", "no conflicts found".to_string())
        };
        let mut status = crd_obj.get("status").cloned().unwrap_or(json!({}));
        let names_ok = if accepted { "True" } else { "False" };
        status["conditions"] = json!([
            condition("NamesAccepted", names_ok, reason, &message, crd_obj),
            if accepted {
                condition(
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                    crd_obj,
                )
            } else {
                condition(
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                    crd_obj,
                )
            },
        ]);
        if accepted {
            status["acceptedNames"] = crd_obj["spec"]["names"].clone();
        } else if status.get("acceptedNames").is_none() {
            status["acceptedNames"] = json!({"plural": "", "kind": ""});
        }
        let mut stored: Vec<Value> = status
            .get("storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(storage) = crd_obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(|v| v["storage"] == json!(true)))
            .and_then(|v| v.get("name").cloned())
        {
            if accepted && !stored.contains(&storage) {
                stored.push(storage);
            }
        }
        status["storedVersions"] = json!(stored);
        if crd_obj.get("status") != Some(&status) {
            let mut updated = crd_obj.clone();
            updated["status"] = status;
            write(state, key, *rev, &updated).await?;
        }
    }
    // Only a change in what is served invalidates the registry's snapshot and OpenAPI.
    let fingerprint = |types: &[ResourceType]| -> Vec<String> {
        types
            .iter()
            .map(|t| {
                format!(
                    "{}/{}/{}:{:?}",
                    t.group,
                    t.version,
                    t.plural,
                    t.custom.as_ref().map(|c| (
                        &c.crd_name,
                        c.terminating,
                        c.spec_hash,
                        &c.deprecation_warning,
                        c.columns.len()
                    ))
                )
            })
            .collect()
    };
    let current: Vec<ResourceType> = current
        .iter()
        .filter(|t| t.custom.is_some())
        .map(|t| (**t).clone())
        .collect();
    if fingerprint(&current) != fingerprint(&served)
        || current.iter().zip(&served).any(|(a, b)| {
            a.scale.is_some() != b.scale.is_some()
                || a.has_status != b.has_status
                || a.short_names != b.short_names
                || a.categories != b.categories
        })
    {
        state.registry.set_custom(served);
        state.rebuild_openapi();
    }
    Ok(outcome)
}

async fn write(state: &AppState, key: &Bytes, rev: i64, obj: &Value) -> Result<(), ApiError> {
    let txn = Txn::new()
        .when(key.clone(), rev)
        .put(key.clone(), encode_for_store(obj)?);
    // A lost race means someone else wrote it; their change triggers the next pass.
    let _ = state.store.txn(txn).await?;
    Ok(())
}

/// A deleted CRD: mark it Terminating, delete its custom resources (those with finalizers
/// are marked and waited for), then drop the cleanup finalizer so the CRD itself goes.
async fn cleanup(state: &AppState, crd_obj: &Value, rev: i64, key: &Bytes) -> Result<(), ApiError> {
    let group = crd_obj
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd_obj
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut remaining = 0usize;
    if !group.is_empty() && !plural.is_empty() {
        let prefix = format!("/registry/{group}/{plural}/");
        let items = state
            .store
            .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
            .await?;
        for kv in items.kvs {
            let obj = decode_stored(&kv)?;
            remaining += 1;
            if object::finalizers(&obj).is_empty() {
                let txn = Txn::new()
                    .when(kv.key.clone(), kv.mod_revision)
                    .delete(kv.key.clone());
                let _ = state.store.txn(txn).await?;
            } else if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let mut marked = obj;
                object::set_meta(
                    &mut marked,
                    "deletionTimestamp",
                    json!(object::now_rfc3339()),
                );
                write(state, &kv.key, kv.mod_revision, &marked).await?;
            }
        }
    }
    let mut updated = crd_obj.clone();
    let mut status = updated.get("status").cloned().unwrap_or(json!({}));
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "Terminating")
        .collect();
    conds.push(condition(
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
        crd_obj,
    ));
    status["conditions"] = json!(conds);
    updated["status"] = status;
    if remaining == 0 {
        let finalizers: Vec<String> = object::finalizers(crd_obj)
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .collect();
        if finalizers.is_empty() {
            let txn = Txn::new().when(key.clone(), rev).delete(key.clone());
            let _ = state.store.txn(txn).await?;
            return Ok(());
        }
        object::set_meta(&mut updated, "finalizers", json!(finalizers));
    }
    if &updated != crd_obj {
        write(state, key, rev, &updated).await?;
    }
    Ok(())
}

/// Run the loop: a pass at start, then one after every CRD change (and every second while a
/// CRD waits for its objects to go).
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let from = state.store.current_revision().await.unwrap_or(0);
            let outcome = match sync(&state).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e.message, "CRD sync failed; retrying");
                    Outcome { terminating: true }
                }
            };
            let idle = if outcome.terminating {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            };
            let watch = state
                .store
                .watch(
                    KeyRange::prefix(Bytes::from_static(PREFIX.as_bytes())),
                    from + 1,
                )
                .await;
            match watch {
                Ok(mut w) => {
                    if let Ok(Some(Ok(_))) = tokio::time::timeout(idle, w.next()).await {
                        // Let a burst of changes settle into one pass.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(_) => tokio::time::sleep(idle).await,
            }
            if state.store.current_revision().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let old = json!({"status": {"conditions": [{"type": "Established", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
        let same = condition("Established", "True", "r", "m", &old);
        assert_eq!(same["lastTransitionTime"], "2020-01-01T00:00:00Z");
        let flipped = condition("Established", "False", "r", "m", &old);
        assert_ne!(flipped["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }
}
