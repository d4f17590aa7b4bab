//! `capstan token create`, as `kubeadm token create`: a bootstrap token Secret in kube-system
//! written through the API with the data dir's admin kubeconfig; the token is printed, or
//! with `--print-join-command` the whole `capstan agent` command a node joins with.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

/// The group every token created here adds (kubeadm's is `…:kubeadm:default-node-token`).
pub const DEFAULT_GROUP: &str = "system:bootstrappers:capstan:default-node-token";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters of `[a-z0-9]`, uniformly (bytes past the last whole multiple of 36 are
/// drawn again).
fn random_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let bytes: [u8; 32] = rand::RngExt::random(&mut rand::rng());
        for b in bytes {
            if out.len() < n && usize::from(b) < 252 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    out
}

/// A Go duration (`24h`, `1h30m`, `90s`, `500ms`, `0`), as kubeadm's `--ttl` takes it.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{s:?} is not a duration (e.g. 24h, 1h30m, 10m, 0 for never)");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = next;
    }
    Ok(Duration::from_secs_f64(total))
}

/// The Secret for token `id.secret`, expiring `ttl` from now (never when zero).
fn secret(
    id: &str,
    secret: &str,
    ttl: Duration,
    groups: &[String],
    description: &str,
) -> serde_json::Value {
    let mut data = json!({
        "token-id": id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": groups.join(","),
    });
    if !description.is_empty() {
        data["description"] = json!(description);
    }
    if !ttl.is_zero() {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let at = chrono::Utc::now() + ttl;
        data["expiration"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    json!({"type": "bootstrap.kubernetes.io/token", "stringData": data})
}

/// Create a token Secret through the API server of `data_dir`; returns `id.secret`.
pub async fn create(
    data_dir: &Path,
    ttl: Duration,
    groups: &[String],
    description: &str,
    print_join_command: bool,
) -> anyhow::Result<String> {
    let data_dir = data_dir.canonicalize().with_context(|| {
        format!(
            "{} (has a server run with this data dir?)",
            data_dir.display()
        )
    })?;
    let kubeconfig = data_dir.join("kubeconfig");
    let client =
        crate::kubeconfig::client(&kubeconfig, Some(crate::kubeconfig::entry_name(&data_dir)))
            .await?;
    let (id, token_secret) = (random_chars(6), random_chars(16));
    let ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Secret".into(),
        plural: "secrets".into(),
    };
    let obj = DynamicObject::new(&format!("bootstrap-token-{id}"), &ar)
        .within("kube-system")
        .data(secret(&id, &token_secret, ttl, groups, description));
    Api::<DynamicObject>::namespaced_with(client.clone(), "kube-system", &ar)
        .create(&PostParams::default(), &obj)
        .await
        .context("creating the bootstrap token Secret")?;
    let token = format!("{id}.{token_secret}");
    if !print_join_command {
        return Ok(token);
    }
    // The URL and CA a joining node discovers (kube-public/cluster-info), so the command
    // names the advertised address, not the one this machine's kubeconfig uses.
    let (server, ca_pem) = crate::agent_join::cluster_info(client).await?;
    let hash = capstan_apiserver::serving::pki::ca_cert_hash(&ca_pem)?;
    Ok(format!(
        "capstan agent --server {server} --token {token} --ca-cert-hash {hash}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_durations() {
        let t = random_chars(16);
        assert_eq!(t.len(), 16);
        assert!(t.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(parse_go_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("soon").is_err());
        let s = secret("abcdef", "0123456789abcdef", Duration::ZERO, &[], "");
        assert!(s["stringData"].get("expiration").is_none());
    }
}
