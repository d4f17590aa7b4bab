//! Registry credentials for a pod's image from its `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` or `.dockercfg`), matched by registry host as the
//! kubelet's credential keyring does (the first secret naming the host wins).

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use crate::images::RegistryAuth;

/// The registry host of a reference (`docker.io` when it names none).
pub fn registry_of(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    if reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        first.to_string()
    } else {
        "docker.io".to_string()
    }
}

pub async fn auth_for(client: &kube::Client, pod: &Pod, reference: &str) -> RegistryAuth {
    let Some(ns) = pod.metadata.namespace.as_deref() else {
        return RegistryAuth::Anonymous;
    };
    let host = registry_of(reference);
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secrets = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref());
    for r in secrets.into_iter().flatten() {
        let Ok(Some(secret)) = api.get_opt(&r.name).await else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let doc = data
            .get(".dockerconfigjson")
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
            .and_then(|v| v.get("auths").cloned())
            .or_else(|| {
                data.get(".dockercfg")
                    .and_then(|b| serde_json::from_slice(&b.0).ok())
            });
        let Some(serde_json::Value::Object(auths)) = doc else {
            continue;
        };
        for (key, entry) in auths {
            let key_host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let matches = key_host == host
                || (host == "docker.io"
                    && (key_host == "index.docker.io" || key_host == "registry-1.docker.io"));
            if !matches {
                continue;
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(|v| v.as_str()),
                entry.get("password").and_then(|v| v.as_str()),
            ) {
                return RegistryAuth::Basic {
                    username: u.into(),
                    password: p.into(),
                };
            }
            if let Some(encoded) = entry.get("auth").and_then(|v| v.as_str()) {
                use base64::Engine;
                if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded) {
                    if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                        return RegistryAuth::Basic {
                            username: u.into(),
                            password: p.into(),
                        };
                    }
                }
            }
        }
    }
    RegistryAuth::Anonymous
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/x:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("quay.io/a/b"), "quay.io");
    }
}
