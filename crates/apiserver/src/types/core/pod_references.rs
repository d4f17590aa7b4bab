//! What a pod refers to by name — Secrets and ConfigMaps through volumes (projected ones
//! too), env and envFrom of every container, image pull secrets and plugins' secret refs —
//! for the Node authorizer and NodeRestriction admission.

use serde_json::Value;

/// The kind of object looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referenced {
    Secret,
    ConfigMap,
}

/// Whether a pod names any Secret (volumes, env, pull secrets, plugin secret refs).
pub fn refers_to_secrets(pod: &Value) -> bool {
    !names(pod, Referenced::Secret).is_empty()
}

/// Whether a pod names any ConfigMap (volumes, env).
pub fn refers_to_config_maps(pod: &Value) -> bool {
    !names(pod, Referenced::ConfigMap).is_empty()
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The names of the Secrets or ConfigMaps a pod refers to (upstream's
/// VisitPodSecretNames / VisitPodConfigmapNames over every container).
pub fn names<'p>(pod: &'p Value, kind: Referenced) -> Vec<&'p str> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    let mut push = |v: Option<&'p Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            out.push(n);
        }
    };
    let secrets = kind == Referenced::Secret;
    let (vol_key, vol_name, env_ref, from_ref) = if secrets {
        ("secret", "/secretName", "secretKeyRef", "secretRef")
    } else {
        ("configMap", "/name", "configMapKeyRef", "configMapRef")
    };
    for vol in list(spec, "volumes") {
        push(vol.get(vol_key).and_then(|v| v.pointer(vol_name)));
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(src.get(vol_key).and_then(|v| v.get("name")));
        }
        // CSI and other plugins' secret references.
        if secrets {
            for plugin in vol.as_object().into_iter().flat_map(|o| o.values()) {
                for k in ["secretRef", "nodePublishSecretRef"] {
                    push(plugin.get(k).and_then(|r| r.get("name")));
                }
            }
        }
    }
    if secrets {
        for s in list(spec, "imagePullSecrets") {
            push(s.get("name"));
        }
    }
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in list(spec, key) {
            for e in list(c, "env") {
                push(
                    e.get("valueFrom")
                        .and_then(|f| f.get(env_ref))
                        .and_then(|r| r.get("name")),
                );
            }
            for e in list(c, "envFrom") {
                push(e.get(from_ref).and_then(|r| r.get("name")));
            }
        }
    }
    out
}
