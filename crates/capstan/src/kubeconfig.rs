//! The admin credential and the kubeconfig that hands it, with the CA, to kubectl.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rand::RngExt;

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
    capstan_apiserver::pki::write_private(path, &token).context("writing the admin token")?;
    Ok(token)
}

pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> anyhow::Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: capstan
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: capstan-admin
  user:
    token: {token}
contexts:
- name: capstan
  context:
    cluster: capstan
    user: capstan-admin
    namespace: default
current-context: capstan
"
    );
    capstan_apiserver::pki::write_private(path, &doc).context("writing the kubeconfig")?;
    Ok(())
}
