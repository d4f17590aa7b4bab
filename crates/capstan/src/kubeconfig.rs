//! The admin credential and the kubeconfig that hands it, with the CA, to kubectl; and
//! kubeconfigs for other users, with client certificates from the cluster CA.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rand::RngExt;
use serde_json::{json, Value};

/// The admin bearer token: 32 random bytes, kept in the data dir across restarts.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let bytes: [u8; 32] = rand::rng().random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    capstan_apiserver::serving::pki::write_private(path, &token)
        .context("writing the admin token")?;
    Ok(token)
}

/// Write capstan's cluster, user and context (named `name`, distinct per server) into the
/// kubeconfig at `path`, keeping every other entry a user added to it; the file is only
/// rewritten when something changed.
pub fn write(
    path: &Path,
    name: &str,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> anyhow::Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut doc: Value = match std::fs::read_to_string(path) {
        Ok(text) => match serde_saphyr::from_str::<Value>(&text) {
            Ok(v) if v.is_object() => v,
            _ => {
                tracing::warn!(path = %path.display(), "the kubeconfig could not be read; writing a new one");
                Value::Null
            }
        },
        Err(_) => Value::Null,
    };
    if !doc.is_object() {
        doc = json!({"apiVersion": "v1", "kind": "Config", "preferences": {}});
    }
    let user = format!("{name}-admin");
    upsert(
        &mut doc,
        "clusters",
        name,
        "cluster",
        json!({"server": server, "certificate-authority-data": ca}),
    );
    upsert(&mut doc, "users", &user, "user", json!({"token": token}));
    upsert(
        &mut doc,
        "contexts",
        name,
        "context",
        json!({"cluster": name, "user": user, "namespace": "default"}),
    );
    // Entries of older capstan versions, which named every server alike.
    for (list, old) in [
        ("clusters", "capstan"),
        ("users", "capstan-admin"),
        ("contexts", "capstan"),
    ] {
        if let Some(a) = doc.get_mut(list).and_then(Value::as_array_mut) {
            a.retain(|e| e.get("name").and_then(Value::as_str) != Some(old));
        }
    }
    // The user's own choice of context stands, unless it names nothing (or an old entry).
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    let exists = doc["contexts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(current))
    });
    if !exists {
        doc["current-context"] = json!(name);
    }
    // Plain one-line scalars (no folding of the long CA data): tools that grep the file
    // for `server:` or `certificate-authority-data:` keep working.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    let text =
        serde_saphyr::to_string_with_options(&doc, options).context("encoding the kubeconfig")?;
    capstan_apiserver::serving::pki::write_private(path, &text)
        .context("writing the kubeconfig")?;
    Ok(())
}

fn upsert(doc: &mut Value, list: &str, name: &str, field: &str, body: Value) {
    if !doc.get(list).is_some_and(Value::is_array) {
        doc[list] = json!([]);
    }
    let entry = json!({"name": name, field: body});
    if let Some(a) = doc[list].as_array_mut() {
        match a
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(e) => *e = entry,
            None => a.push(entry),
        }
    }
}

/// A name for this server's entries that differs between servers on one machine and stays
/// the same across restarts: derived from its data directory.
pub fn entry_name(data_dir: &Path) -> String {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("capstan-{:08x}", h as u32)
}
/// A kube-rs client for the server a kubeconfig names (the stand-alone scheduler, agent).
pub async fn client(path: &Path, context: Option<String>) -> anyhow::Result<kube::Client> {
    Ok(client_and_ca(path, context).await?.0)
}

/// As `client`, with the CA the kubeconfig trusts for the server (PEM), if it names one:
/// what upstream's controller-manager publishes as `kube-root-ca.crt` without
/// `--root-ca-file`.
pub async fn client_and_ca(
    path: &Path,
    context: Option<String>,
) -> anyhow::Result<(kube::Client, Option<String>)> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let options = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .with_context(|| format!("using {}", path.display()))?;
    let ca = config.root_cert.as_deref().map(pem_certificates);
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok((client, ca))
}

/// DER certificates as one PEM bundle (64 base64 characters a line, as openssl writes).
fn pem_certificates(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// A kubeconfig (YAML) for `user` in `groups` with a fresh client certificate from the CA
/// in `data_dir`; the server is `server`, else the one the admin kubeconfig names.
pub fn for_user(
    data_dir: &Path,
    user: &str,
    groups: &[String],
    server: Option<&str>,
) -> anyhow::Result<String> {
    if user.is_empty() {
        anyhow::bail!("--user must not be empty");
    }
    // The server names its entries after the canonical path (data_dir::open).
    let data_dir = &data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let pki_dir = data_dir.join("pki");
    let ca_pem = std::fs::read_to_string(pki_dir.join("ca.crt")).with_context(|| {
        format!(
            "reading the cluster CA in {} (has a server run with this data dir?)",
            pki_dir.display()
        )
    })?;
    let cert = capstan_apiserver::serving::pki::issue_client_cert(&pki_dir, user, groups)
        .context("issuing the client certificate")?;
    let name = entry_name(data_dir);
    let server = match server {
        Some(s) => s.to_string(),
        None => admin_server(&data_dir.join("kubeconfig"), &name)
            .unwrap_or_else(|| "https://127.0.0.1:6443".to_string()),
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let context = format!("{user}@{name}");
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(&ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(&cert.cert_pem),
            "client-key-data": b64(&cert.key_pem),
        }}],
        "contexts": [{"name": context, "context": {"cluster": name, "user": user, "namespace": "default"}}],
        "current-context": context,
    });
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(&doc, options).context("encoding the kubeconfig")
}

/// The server URL of this data dir's cluster entry in its admin kubeconfig.
fn admin_server(path: &Path, name: &str) -> Option<String> {
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    doc.get("clusters")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?
        .pointer("/cluster/server")?
        .as_str()
        .map(str::to_string)
}
