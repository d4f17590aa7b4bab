//! Bootstrap (join) tokens, as upstream's bootstrap token authenticator: `<id>.<secret>` is
//! checked against the Secret `kube-system/bootstrap-token-<id>` and names the user
//! `system:bootstrap:<id>` in `system:bootstrappers` (plus the Secret's extra groups).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::serving::user_info::{User, UserInfo};
use crate::AppState;

pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const NAMESPACE: &str = "kube-system";
const USER_PREFIX: &str = "system:bootstrap:";

/// Why a bootstrap token does not authenticate (all are a 401 to the client).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapTokenError {
    #[error("no bootstrap token secret {0:?}")]
    NoSecret(String),
    #[error("the secret is not of type {SECRET_TYPE}")]
    WrongType,
    #[error("the token's secret part does not match")]
    Mismatch,
    #[error("the token expired at {0}")]
    Expired(String),
    #[error("the token is not marked for authentication")]
    NotForAuthentication,
    #[error("the secret is being deleted")]
    Deleting,
    #[error("extra group {0:?} is not of the form system:bootstrappers:<name>")]
    BadGroup(String),
    #[error("reading the secret failed: {0}")]
    Store(String),
}

/// `(id, secret)` when `token` has a bootstrap token's shape (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// One `data` value of a Secret, decoded.
fn data(secret: &Value, key: &str) -> String {
    use base64::Engine;
    secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// upstream's bootstrap group rule: `system:bootstrappers:` and a name.
fn valid_group(g: &str) -> bool {
    g.strip_prefix("system:bootstrappers:").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 256
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
            && rest
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Whether the token Secret `secret` vouches for `secret_part` at `now`, and as whom.
pub fn check(
    secret: &Value,
    id: &str,
    secret_part: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<UserInfo, BootstrapTokenError> {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(BootstrapTokenError::WrongType);
    }
    if crate::object::meta_str(secret, "deletionTimestamp").is_some() {
        return Err(BootstrapTokenError::Deleting);
    }
    let (stored_id, stored_secret) = (data(secret, "token-id"), data(secret, "token-secret"));
    let same = stored_secret.as_bytes().ct_eq(secret_part.as_bytes());
    if stored_id != id || !bool::from(same) {
        return Err(BootstrapTokenError::Mismatch);
    }
    let expiration = data(secret, "expiration");
    if !expiration.is_empty() {
        let expired = chrono::DateTime::parse_from_rfc3339(&expiration)
            .map(|t| t <= now)
            // upstream treats an unparsable expiration as expired.
            .unwrap_or(true);
        if expired {
            return Err(BootstrapTokenError::Expired(expiration));
        }
    }
    if data(secret, "usage-bootstrap-authentication") != "true" {
        return Err(BootstrapTokenError::NotForAuthentication);
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    for g in data(secret, "auth-extra-groups")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !valid_group(g) {
            return Err(BootstrapTokenError::BadGroup(g.to_string()));
        }
        if !groups.iter().any(|have| have == g) {
            groups.push(g.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Ok(UserInfo {
        username: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// Authenticate a token of the bootstrap shape against its Secret.
pub async fn authenticate(
    state: &AppState,
    id: &str,
    secret_part: &str,
) -> Result<User, BootstrapTokenError> {
    let name = format!("{SECRET_PREFIX}{id}");
    let rt = state
        .registry
        .find("", "v1", "secrets")
        .ok_or_else(|| BootstrapTokenError::Store("secrets are not registered".into()))?;
    let (secret, _) = crate::storage::read(state, &rt, Some(NAMESPACE), &name)
        .await
        .map_err(|e| BootstrapTokenError::Store(e.message))?
        .ok_or(BootstrapTokenError::NoSecret(name))?;
    check(&secret, id, secret_part, chrono::Utc::now()).map(|u| User(Arc::new(u)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: &str, groups: &str) -> Value {
        json!({
            "type": SECRET_TYPE,
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": NAMESPACE},
            "data": {
                "token-id": b64("abcdef"),
                "token-secret": b64("0123456789abcdef"),
                "expiration": b64(expiration),
                "usage-bootstrap-authentication": b64("true"),
                "auth-extra-groups": b64(groups),
            }
        })
    }

    #[test]
    fn tokens_are_checked_as_upstream() {
        assert_eq!(
            split("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(split("ABCDEF.0123456789abcdef"), None);
        assert_eq!(split("abcdef.0123"), None);
        let now = chrono::Utc::now();
        let later = (now + chrono::Duration::hours(1)).to_rfc3339();
        let user = check(
            &secret(&later, "system:bootstrappers:kubeadm:default-node-token"),
            "abcdef",
            "0123456789abcdef",
            now,
        )
        .unwrap();
        assert_eq!(user.username, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:authenticated"
            ]
        );
        assert_eq!(
            check(&secret(&later, ""), "abcdef", "0123456789abcdeX", now),
            Err(BootstrapTokenError::Mismatch)
        );
        let earlier = (now - chrono::Duration::hours(1)).to_rfc3339();
        assert!(matches!(
            check(&secret(&earlier, ""), "abcdef", "0123456789abcdef", now),
            Err(BootstrapTokenError::Expired(_))
        ));
        assert!(matches!(
            check(
                &secret(&later, "system:masters"),
                "abcdef",
                "0123456789abcdef",
                now
            ),
            Err(BootstrapTokenError::BadGroup(_))
        ));
    }
}
