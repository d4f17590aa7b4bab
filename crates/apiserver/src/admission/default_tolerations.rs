//! The DefaultTolerationSeconds admission plugin: a new pod tolerates its node being
//! not-ready or unreachable for 300 s (then it is evicted), unless it says otherwise.

use serde_json::{json, Value};

use crate::admission::{creates_pod, Attributes, Operation, Plugin, Verdict};
use crate::types::registry::ResourceType;

pub struct DefaultTolerationSeconds;

impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        creates_pod(operation, rt)
    }

    fn mutate<'a>(
        &'a self,
        _attrs: &'a Attributes<'a>,
        pod: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        admit(pod);
        Box::pin(async { Ok(()) })
    }
}

/// Tolerate not-ready and unreachable nodes for 300 s unless the pod says otherwise.
pub fn admit(pod: &mut Value) {
    if let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) {
        if !spec.get("tolerations").is_some_and(Value::is_array) {
            spec["tolerations"] = json!([]);
        }
        if let Some(tols) = spec["tolerations"].as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let has = tols.iter().any(|t| {
                    t.get("key").and_then(Value::as_str) == Some(key)
                        && t.get("effect")
                            .and_then(Value::as_str)
                            .is_none_or(|e| e == "NoExecute")
                });
                if !has {
                    tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_tolerates_unready_nodes_for_five_minutes() {
        let mut pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        admit(&mut pod);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["tolerationSeconds"], 5);
        assert_eq!(tols[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(tols[1]["tolerationSeconds"], 300);
    }
}
