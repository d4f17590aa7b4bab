//! `--encryption-provider-config`: upstream's EncryptionConfiguration
//! (apiserver.config.k8s.io/v1) read into which key prefixes each provider list covers.

use base64::Engine;
use serde::Deserialize;

use super::providers::{Cipher, Key, Provider};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read encryption config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("encryption config {path}: {why}")]
    Invalid { path: String, why: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
struct KeysConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

#[derive(Deserialize)]
struct ProviderConfig {
    identity: Option<serde_json::Value>,
    aescbc: Option<KeysConfig>,
    aesgcm: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
    kms: Option<serde_json::Value>,
}

/// Which stored keys a provider list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/registry/secrets/` for `secrets`, `/registry/apps/deployments/` for
    /// `deployments.apps`, `/registry/apps/` for `*.apps`.
    Prefix(String),
    /// `*.*`: every resource.
    Everything,
}

impl Scope {
    pub fn covers(&self, key: &[u8]) -> bool {
        match self {
            Scope::Everything => key.starts_with(b"/registry/"),
            Scope::Prefix(p) => key.starts_with(p.as_bytes()),
        }
    }
}

/// Each scope with its providers: the first encrypts, all of them decrypt.
pub struct Rules {
    pub rules: Vec<(Scope, std::sync::Arc<Vec<Provider>>)>,
}

fn scope(resource: &str) -> Result<Scope, String> {
    match resource {
        "*.*" => Ok(Scope::Everything),
        "" => Err("a resource name is empty".into()),
        "*." => Err("`*.` (every core resource) is not supported; name the resources".into()),
        r => {
            let (plural, group) = r.split_once('.').unwrap_or((r, ""));
            Ok(match (plural, group) {
                ("*", g) => Scope::Prefix(format!("/registry/{g}/")),
                (p, "") => Scope::Prefix(format!("/registry/{p}/")),
                (p, g) => Scope::Prefix(format!("/registry/{g}/{p}/")),
            })
        }
    }
}

fn keys(cipher: Cipher, k: KeysConfig) -> Result<Provider, String> {
    if k.keys.is_empty() {
        return Err(format!("{} needs at least one key", cipher.name()));
    }
    let mut out = Vec::new();
    for key in k.keys {
        if key.name.is_empty() || key.name.contains(':') {
            return Err(format!(
                "{} key name {:?} must be non-empty and without ':'",
                cipher.name(),
                key.name
            ));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(key.secret.trim())
            .map_err(|e| {
                format!(
                    "{} key {:?}: secret is not base64: {e}",
                    cipher.name(),
                    key.name
                )
            })?;
        if !cipher.key_sizes().contains(&secret.len()) {
            return Err(format!(
                "{} key {:?} is {} bytes; it must be {} bytes",
                cipher.name(),
                key.name,
                secret.len(),
                cipher
                    .key_sizes()
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
        out.push(Key {
            name: key.name,
            secret,
        });
    }
    Ok(Provider::Keyed { cipher, keys: out })
}

impl Rules {
    pub fn parse(path: &str, text: &str) -> Result<Rules, ConfigError> {
        let bad = |why: String| ConfigError::Invalid {
            path: path.to_string(),
            why,
        };
        let f: File = crate::limits::parse_config_yaml(text).map_err(bad)?;
        if f.kind != "EncryptionConfiguration"
            || !f.api_version.starts_with("apiserver.config.k8s.io/")
        {
            return Err(bad(format!(
                "apiVersion/kind must be apiserver.config.k8s.io/v1 EncryptionConfiguration, not {}/{}",
                f.api_version, f.kind
            )));
        }
        let mut rules = Vec::new();
        for (i, rc) in f.resources.into_iter().enumerate() {
            if rc.providers.is_empty() {
                return Err(bad(format!("resources[{i}].providers must not be empty")));
            }
            let mut providers = Vec::new();
            for (j, p) in rc.providers.into_iter().enumerate() {
                let set = [
                    p.identity.is_some(),
                    p.aescbc.is_some(),
                    p.aesgcm.is_some(),
                    p.secretbox.is_some(),
                    p.kms.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if set != 1 {
                    return Err(bad(format!(
                        "resources[{i}].providers[{j}] must name exactly one provider"
                    )));
                }
                let provider = if p.identity.is_some() {
                    Provider::Identity
                } else if let Some(k) = p.aescbc {
                    keys(Cipher::AesCbc, k).map_err(&bad)?
                } else if let Some(k) = p.aesgcm {
                    keys(Cipher::AesGcm, k).map_err(&bad)?
                } else if let Some(k) = p.secretbox {
                    keys(Cipher::Secretbox, k).map_err(&bad)?
                } else {
                    return Err(bad(format!(
                        "resources[{i}].providers[{j}]: kms is not supported"
                    )));
                };
                providers.push(provider);
            }
            let providers = std::sync::Arc::new(providers);
            for r in rc.resources {
                rules.push((scope(&r).map_err(&bad)?, providers.clone()));
            }
        }
        Ok(Rules { rules })
    }

    pub fn load(path: &str) -> Result<Rules, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Rules::parse(path, &text)
    }

    /// The providers for a stored key: the first listed resource that covers it.
    pub fn for_key(&self, key: &[u8]) -> Option<&[Provider]> {
        self.rules
            .iter()
            .find(|(s, _)| s.covers(key))
            .map(|(_, p)| p.as_slice())
    }
}
