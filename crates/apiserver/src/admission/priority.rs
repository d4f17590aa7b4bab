//! The Priority admission plugin for new Pods: `priorityClassName` resolves to the class's
//! value and preemption policy (no name: the global default class, else 0); a class that
//! does not exist, or a priority that contradicts it, is a 403 as upstream answers.

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use serde_json::{json, Value};

use crate::admission::{creates_pod, Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::{decode_for, read};
use crate::types::registry::ResourceType;
use crate::AppState;

fn forbidden(pod: &str, why: String) -> ApiError {
    ApiError::forbidden(format!("pods \"{pod}\" is forbidden: {why}"))
        .with_details(json!({"name": pod, "kind": "pods"}))
}

/// The Priority admission plugin.
pub struct Priority;

impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        creates_pod(operation, rt)
    }

    fn mutate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        pod: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(admit(attrs.state, pod))
    }
}

/// Fill in `spec.priority` (and the class's preemption policy) of a Pod being created.
pub async fn admit(state: &AppState, pod: &mut Value) -> Result<(), ApiError> {
    let Some(rt) = state
        .registry
        .find("scheduling.k8s.io", "v1", "priorityclasses")
    else {
        return Ok(());
    };
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let asked = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    let class = match &asked {
        Some(name) => match read(state, &rt, None, name).await? {
            Some((pc, _)) => Some(pc),
            None => {
                return Err(forbidden(
                    &pod_name,
                    format!("no PriorityClass with name {name} was found"),
                ))
            }
        },
        None => {
            let all = state
                .store
                .range(RangeRequest::new(KeyRange::prefix(Bytes::from(
                    rt.key_prefix(),
                ))))
                .await?;
            let mut found = None;
            for kv in &all.kvs {
                let pc = decode_for(&rt, kv)?;
                if pc.get("globalDefault") == Some(&Value::Bool(true)) {
                    found = Some(pc);
                    break;
                }
            }
            found
        }
    };
    let (value, policy, name) = match &class {
        Some(pc) => (
            pc.get("value").and_then(Value::as_i64).unwrap_or(0),
            pc.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
            pc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from),
        ),
        None => (0, "PreemptLowerPriority".to_string(), None),
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(forbidden(
                &pod_name,
                format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"),
            ));
        }
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if class.is_some() && given != policy {
            return Err(forbidden(
                &pod_name,
                format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
            ));
        }
    }
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    if let Some(name) = name {
        spec.insert("priorityClassName".into(), json!(name));
    }
    Ok(())
}
