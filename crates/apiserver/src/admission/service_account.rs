//! The ServiceAccount admission plugin: a new pod runs as its namespace's `default`
//! service account unless it names one, which must exist, with the projected API-access
//! volume mounted (unless the pod or its account opt out).

use std::time::Duration;

use serde_json::{json, Value};

use crate::admission::{creates_pod, forbidden, Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::read;
use crate::types::registry::ResourceType;

/// Looks for a missing `default` account (the ServiceAccount controller makes it moments
/// after its namespace), as upstream: up to ten times, 100–200 ms apart.
const DEFAULT_LOOKUPS: usize = 10;

/// Where the token, CA and namespace are mounted in every container.
pub const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub struct ServiceAccount;

impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
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
        Box::pin(async move {
            let ns = crate::object::namespace(pod).to_string();
            let name = account_name(pod);
            // A pod a kubelet mirrors from a static manifest is not checked upstream either.
            if pod
                .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                .is_some()
            {
                return Ok(());
            }
            let account = lookup(attrs, &ns, &name).await?;
            admit(pod);
            // The account may opt its pods out of the API-access volume; the pod's own
            // setting wins.
            if account.pointer("/automountServiceAccountToken") == Some(&json!(false))
                && pod.pointer("/spec/automountServiceAccountToken").is_none()
            {
                unmount(pod);
            }
            Ok(())
        })
    }
}

/// The account the pod names, `default` if none.
fn account_name(pod: &Value) -> String {
    let spec = pod.get("spec");
    let named = |k: &str| {
        spec.and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    named("serviceAccountName")
        .or_else(|| named("serviceAccount"))
        .unwrap_or("default")
        .to_string()
}

/// The stored ServiceAccount, or upstream's 403 `error looking up service account`.
async fn lookup(attrs: &Attributes<'_>, ns: &str, name: &str) -> Result<Value, ApiError> {
    let state = attrs.state;
    let rt = state
        .registry
        .find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not registered"))?;
    let tries = if name == "default" {
        DEFAULT_LOOKUPS
    } else {
        1
    };
    for i in 0..tries {
        if i > 0 {
            let jitter: u64 = rand::RngExt::random_range(&mut rand::rng(), 0..100);
            tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
        }
        if let Some((sa, _)) = read(state, &rt, Some(ns), name).await? {
            return Ok(sa);
        }
    }
    Err(forbidden(
        attrs,
        &format!("error looking up service account {ns}/{name}: serviceaccount {name:?} not found"),
    ))
}

/// Take the API-access volume `admit` added back out.
fn unmount(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    let ours = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    };
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vols.retain(|v| !ours(v));
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(ms) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    ms.retain(|m| !ours(m));
                }
            }
        }
    }
}

/// The pod's service account (`default` unless named) and its API-access volume.
pub fn admit(pod: &mut Value) {
    if let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) {
        let sa = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.get("serviceAccount")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("default")
            .to_string();
        spec["serviceAccountName"] = json!(sa);
        spec["serviceAccount"] = json!(sa);
        token_volume(spec);
    }
}

/// The projected API-access volume (token, cluster CA, namespace), mounted into every
/// container, unless the pod opts out or mounts one itself.
fn token_volume(spec: &mut Value) {
    if spec.get("automountServiceAccountToken") == Some(&json!(false)) {
        return;
    }
    let mounts = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT))
            })
    };
    let mounted = ["containers", "initContainers"].iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(mounts))
    });
    if mounted {
        return;
    }
    let name = format!(
        "kube-api-access-{}",
        crate::types::defaults::random_suffix()
    );
    if !spec.get("volumes").is_some_and(Value::is_array) {
        spec["volumes"] = json!([]);
    }
    if let Some(vols) = spec["volumes"].as_array_mut() {
        vols.push(json!({"name": name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}}));
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                if !c.get("volumeMounts").is_some_and(Value::is_array) {
                    c["volumeMounts"] = json!([]);
                }
                if let Some(ms) = c["volumeMounts"].as_array_mut() {
                    ms.push(json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT}));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_runs_as_default_with_the_api_volume_mounted() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        admit(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["serviceAccountName"], "default");
        assert_eq!(s["serviceAccount"], "default");
        let vol = s["volumes"][0]["name"].as_str().unwrap();
        assert!(vol.starts_with("kube-api-access-"));
        for c in ["containers", "initContainers"] {
            assert_eq!(s[c][0]["volumeMounts"][0]["mountPath"], TOKEN_MOUNT);
            assert_eq!(s[c][0]["volumeMounts"][0]["name"], vol);
        }
        let mut opted_out = json!({"spec": {"serviceAccountName": "robot",
            "automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        admit(&mut opted_out);
        assert_eq!(opted_out["spec"]["serviceAccount"], "robot");
        assert!(opted_out["spec"].get("volumes").is_none());
    }
}
