//! A container's environment as the kubelet builds it: `envFrom` sources, then `env` in
//! order with `$(VAR)` expansion over what came before; values from ConfigMaps, Secrets,
//! the pod's own fields and its resources. A missing required source is the container's
//! `CreateContainerConfigError`, worded as upstream.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

use super::quantity;

/// Why the environment could not be built (the waiting message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// Fetches the ConfigMaps and Secrets a pod refers to, once per sync.
pub struct Sources {
    client: kube::Client,
    namespace: String,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
}

impl Sources {
    pub fn new(client: kube::Client, namespace: &str) -> Sources {
        Sources {
            client,
            namespace: namespace.to_string(),
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    pub async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| EnvError(format!("reading configmap {name:?}: {e}")))?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    pub async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| EnvError(format!("reading secret {name:?}: {e}")))?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// `KEY=value` entries: the image's env first (overridden by the pod's), then the pod's.
/// `service_env` (the service-link variables) comes before the container's own, which win
/// over it and may refer to it with `$(VAR)`, as upstream.
pub async fn build(
    pod: &Pod,
    container: &Container,
    image_env: &[String],
    host_ip: &str,
    pod_ip: Option<&str>,
    service_env: Vec<(String, String)>,
    sources: &mut Sources,
) -> Result<Vec<String>, EnvError> {
    let ns = sources.namespace().to_string();
    let mut vars: Vec<(String, String)> = service_env;
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if optional => {}
                None => return Err(EnvError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.secret(&r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => return Err(EnvError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let known: BTreeMap<&str, &str> =
                    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(var.value.as_deref().unwrap_or(""), &known)
            }
            Some(from) => {
                if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.config_map(&r.name).await? {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    r.key, r.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => {
                            return Err(EnvError(format!("configmap \"{}\" not found", r.name)))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.secret(&r.name).await? {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError(format!("secret \"{}\" not found", r.name))),
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, host_ip, pod_ip).ok_or_else(|| {
                        EnvError(format!("unsupported fieldPath: {}", f.field_path))
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        None | Some("") => container,
                        Some(name) => pod
                            .spec
                            .iter()
                            .flat_map(|s| s.containers.iter())
                            .find(|c| c.name == name)
                            .unwrap_or(container),
                    };
                    resource_value(
                        target,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )
                    .ok_or_else(|| {
                        EnvError(format!("unsupported container resource: {}", r.resource))
                    })?
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, var.name.clone(), value);
    }
    let mut out: Vec<String> = Vec::new();
    for entry in image_env {
        let key = entry.split('=').next().unwrap_or("");
        if !vars.iter().any(|(k, _)| k == key) {
            out.push(entry.clone());
        }
    }
    out.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
    Ok(out)
}

/// `$(VAR)` expands to a known variable, `$$` escapes, anything else stays as written.
pub fn expand(input: &str, known: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match known.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API's fields (env and volumes share it).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ip: Option<&str>) -> Option<String> {
    let meta = &pod.metadata;
    let bracket = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
        Some(rest.strip_suffix("']")?.to_string())
    };
    if let Some(key) = bracket("metadata.labels") {
        return Some(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(&key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    if let Some(key) = bracket("metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(&key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(meta.labels.as_ref()),
        "metadata.annotations" => map_lines(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip
            .map(str::to_string)
            .or_else(|| status.and_then(|s| s.pod_ip.clone()))
            .unwrap_or_default(),
        _ => return None,
    })
}

/// `key="value"` lines, sorted, as the downward API writes label and annotation files.
fn map_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `limits.cpu`, `requests.memory` … divided by the divisor and rounded up, as upstream; an
/// unset limit is the node's allocatable in upstream — here the host's.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Option<String> {
    let (kind, name) = resource.split_once('.')?;
    let res = container.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let raw = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
    let value = match (name, raw) {
        (_, Some(q)) => quantity::parse(&q)?,
        ("cpu", None) => quantity::host_cpus() as f64,
        ("memory", None) => quantity::host_memory_bytes() as f64,
        ("ephemeral-storage", None) => 0.0,
        _ => return None,
    };
    let div = match divisor {
        Some(d) if !d.is_empty() => quantity::parse(d)?,
        _ => 1.0,
    };
    if div <= 0.0 {
        return None;
    }
    Some(format!(
        "{}",
        (value / div)
            .ceil()
            .max(if value > 0.0 { 1.0 } else { 0.0 }) as u64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_as_upstream() {
        let known: BTreeMap<&str, &str> = [("A", "x"), ("B", "y")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &known), "x-y");
        assert_eq!(expand("$$(A)", &known), "$(A)");
        assert_eq!(expand("$(C)", &known), "$(C)");
        assert_eq!(expand("a$b", &known), "a$b");
        assert_eq!(expand("$(A", &known), "$(A");
    }
}
