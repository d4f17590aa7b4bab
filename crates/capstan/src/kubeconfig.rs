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
        Ok(text) => match capstan_apiserver::limits::parse_request_yaml(&text) {
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
/// A kubeconfig file, read as kubectl reads one (YAML into JSON, then the typed config) and
/// not with kube-rs's `Kubeconfig::read_from` (a YAML decoder of its own for every type in
/// it, ~0.3 MB of the binary). As there, the files it names are relative to its directory.
fn read(path: &Path) -> anyhow::Result<kube::config::Kubeconfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut kc: kube::config::Kubeconfig = capstan_apiserver::limits::parse_config_yaml(&text)
        .map_err(|why| anyhow::anyhow!("reading {}: {why}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let absolute = |file: &mut Option<String>| {
        if let Some(f) = file.as_deref().filter(|f| Path::new(f).is_relative()) {
            if let Some(joined) = dir.join(f).to_str() {
                *file = Some(joined.to_string());
            }
        }
    };
    for cluster in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        absolute(&mut cluster.certificate_authority);
    }
    for user in kc
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        absolute(&mut user.client_certificate);
        absolute(&mut user.client_key);
        absolute(&mut user.token_file);
        // An exec plugin named by a path (not a bare command looked up on PATH), as
        // client-go resolves it.
        if let Some(exec) = user.exec.as_mut() {
            if exec.command.as_deref().is_some_and(|c| c.contains('/')) {
                absolute(&mut exec.command);
            }
        }
    }
    Ok(kc)
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
    let kc = read(path)?;
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
    let doc =
        capstan_apiserver::limits::parse_request_yaml(&std::fs::read_to_string(path).ok()?).ok()?;
    doc.get("clusters")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?
        .pointer("/cluster/server")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfigs_files_are_relative_to_its_directory() {
        let dir = std::env::temp_dir().join(format!("capstan-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: '7'\n\
             clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}\n\
             users:\n- name: u\n  user:\n    client-certificate: certs/u.crt\n    client-key: /abs/u.key\n    tokenFile: tok\n\
             \x20   exec: {apiVersion: client.authentication.k8s.io/v1, command: bin/plugin}\n\
             - name: v\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}\n\
             contexts:\n- name: '7'\n  context: {cluster: c, user: u}\n",
        )
        .unwrap();
        let kc = read(&path).unwrap();
        let at = |f: &str| Some(dir.join(f).to_str().unwrap().to_string());
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.certificate_authority, at("ca.crt"));
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate, at("certs/u.crt"));
        assert_eq!(user.client_key.as_deref(), Some("/abs/u.key"));
        assert_eq!(user.token_file, at("tok"));
        assert_eq!(user.exec.as_ref().unwrap().command, at("bin/plugin"));
        // A bare command is looked up on PATH, as client-go leaves it.
        let bare = kc.auth_infos[1].auth_info.as_ref().unwrap();
        assert_eq!(bare.exec.as_ref().unwrap().command.as_deref(), Some("aws"));
        assert_eq!(kc.current_context.as_deref(), Some("7"));

        // YAML is read into JSON first, as kubectl reads it: an unquoted number is not a name.
        std::fs::write(&path, "apiVersion: v1\nkind: Config\ncurrent-context: 7\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("invalid type: integer"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
