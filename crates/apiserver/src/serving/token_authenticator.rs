//! The service-account token authenticator: a verified JWT (cached by its hash until it
//! expires) whose ServiceAccount and bound Pod/Secret/Node still exist becomes a `UserInfo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::serving::service_account_jwt::{self as jwt, Claims, ObjectRef, TokenError};
use crate::serving::service_account_key::SigningKey;
use crate::serving::user_info::UserInfo;
use crate::AppState;

/// Verified tokens kept, at most (a cluster's pods each hold one or two).
const CACHE_ENTRIES: usize = 4096;

/// A bound Pod or Secret whose deletion is due longer ago than this no longer vouches for
/// its tokens; a pod still within its grace period keeps using its token while it stops.
const DELETION_GRACE_SECONDS: i64 = 60;

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// A token accepted: who it is, and for which of the wanted audiences.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserInfo,
    pub audiences: Vec<String>,
}

pub struct TokenAuthenticator {
    pub key: SigningKey,
    /// What a token must be for to reach this API (`--api-audiences`).
    pub api_audiences: Vec<String>,
    /// Signature checks already made: SHA-256 of the token → its claims. The bound objects
    /// are looked up on every request, so a deletion takes effect at once.
    verified: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenAuthenticator({:?})", self.key)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TokenAuthenticator {
    pub fn new(key: SigningKey) -> Self {
        TokenAuthenticator {
            key,
            api_audiences: vec![jwt::ISSUER.to_string()],
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of a token with a valid signature that has not expired at `now`.
    fn claims(&self, token: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(claims) = cached {
            if claims.exp.saturating_add(jwt::LEEWAY_SECONDS) < now {
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = Arc::new(jwt::verify(&self.key, token, now)?);
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| c.exp.saturating_add(jwt::LEEWAY_SECONDS) >= now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(id, claims.clone());
        Ok(claims)
    }

    /// Authenticate `token` for `audiences` (None: this API's own audiences).
    pub async fn authenticate(
        &self,
        state: &AppState,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<Authenticated, TokenError> {
        let now = now();
        let claims = self.claims(token, now)?;
        let accepted = jwt::accepted_audiences(&claims, audiences.unwrap_or(&self.api_audiences))?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let sa = lookup(state, "serviceaccounts", Some(ns), &k.serviceaccount).await?;
        if sa.pointer("/metadata/deletionTimestamp").is_some() {
            tracing::debug!(namespace = ns, name = %k.serviceaccount.name, "service account is being deleted");
            return Err(TokenError::Invalidated);
        }
        let deadline = now - DELETION_GRACE_SECONDS;
        if let Some(pod) = &k.pod {
            still_bound(&lookup(state, "pods", Some(ns), pod).await?, deadline)?;
        }
        if let Some(secret) = &k.secret {
            still_bound(&lookup(state, "secrets", Some(ns), secret).await?, deadline)?;
        }
        // A pod-bound token names its pod's node for information only; a node-bound one
        // lives as long as the node.
        if let (None, Some(node)) = (&k.pod, &k.node) {
            lookup(state, "nodes", None, node).await?;
        }
        Ok(Authenticated {
            user: user_of(&claims),
            audiences: accepted,
        })
    }
}

/// The bound object, which must exist with the token's uid.
async fn lookup(
    state: &AppState,
    plural: &str,
    ns: Option<&str>,
    want: &ObjectRef,
) -> Result<Value, TokenError> {
    let Some(rt) = state.registry.find("", "v1", plural) else {
        return Err(TokenError::Invalidated);
    };
    let found = crate::storage::read(state, &rt, ns, &want.name)
        .await
        .map_err(|e| {
            tracing::warn!(resource = plural, name = %want.name, error = %e.message, "reading a token's bound object failed");
            TokenError::Invalidated
        })?;
    match found {
        Some((obj, _)) if crate::object::meta_str(&obj, "uid") == Some(want.uid.as_str()) => {
            Ok(obj)
        }
        Some(_) => {
            tracing::debug!(resource = plural, name = %want.name, "bound object was recreated (uid differs)");
            Err(TokenError::Invalidated)
        }
        None => {
            tracing::debug!(resource = plural, name = %want.name, "bound object is gone");
            Err(TokenError::Invalidated)
        }
    }
}

/// A Pod or Secret marked for deletion more than the grace ago no longer vouches.
fn still_bound(obj: &Value, deadline: i64) -> Result<(), TokenError> {
    let deleted_at = crate::object::meta_str(obj, "deletionTimestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    match deleted_at {
        Some(at) if at < deadline => Err(TokenError::Invalidated),
        _ => Ok(()),
    }
}

/// Upstream's service-account user: its name, the account's uid, the service-account groups
/// and what the token is bound to as extra.
pub fn user_of(claims: &Claims) -> UserInfo {
    let k = &claims.kubernetes;
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        extra.insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
        extra.insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
    }
    if let Some(node) = &k.node {
        extra.insert(EXTRA_NODE_NAME.to_string(), vec![node.name.clone()]);
        extra.insert(EXTRA_NODE_UID.to_string(), vec![node.uid.clone()]);
    }
    if !claims.jti.is_empty() {
        extra.insert(
            EXTRA_CREDENTIAL_ID.to_string(),
            vec![format!("JTI={}", claims.jti)],
        );
    }
    UserInfo {
        username: claims.sub.clone(),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", k.namespace),
            "system:authenticated".to_string(),
        ],
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_deleted_within_the_grace_still_vouches() {
        let now = 1_800_000_000;
        let at = |t: i64| {
            let ts = chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
            json!({"metadata": {"deletionTimestamp": ts}})
        };
        let deadline = now - DELETION_GRACE_SECONDS;
        assert!(still_bound(&json!({"metadata": {}}), deadline).is_ok());
        assert!(still_bound(&at(now + 30), deadline).is_ok());
        assert!(still_bound(&at(now - 10), deadline).is_ok());
        assert_eq!(
            still_bound(&at(now - DELETION_GRACE_SECONDS - 1), deadline),
            Err(TokenError::Invalidated)
        );
    }

    #[test]
    fn the_user_carries_upstreams_groups_and_extra() {
        let key = SigningKey::generate().unwrap();
        let (_, claims) = jwt::issue(
            &key,
            jwt::Request {
                namespace: "ns1",
                service_account: ObjectRef {
                    name: "build".into(),
                    uid: "sa-uid".into(),
                },
                audiences: vec![jwt::ISSUER.into()],
                expiration_seconds: 600,
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "pod-uid".into(),
                }),
                secret: None,
                node: Some(ObjectRef {
                    name: "n1".into(),
                    uid: "node-uid".into(),
                }),
            },
            1_800_000_000,
        )
        .unwrap();
        let user = user_of(&claims);
        assert_eq!(user.username, "system:serviceaccount:ns1:build");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        assert_eq!(user.extra[EXTRA_POD_NAME], ["p"]);
        assert_eq!(user.extra[EXTRA_POD_UID], ["pod-uid"]);
        assert_eq!(user.extra[EXTRA_NODE_NAME], ["n1"]);
        assert_eq!(
            user.extra[EXTRA_CREDENTIAL_ID],
            [format!("JTI={}", claims.jti)]
        );
    }

    #[test]
    fn the_cache_answers_expiry_without_reverifying() {
        let key = SigningKey::generate().unwrap();
        let auth = TokenAuthenticator::new(key);
        let now = now();
        let (token, _) = jwt::issue(
            &auth.key,
            jwt::Request {
                namespace: "ns1",
                service_account: ObjectRef {
                    name: "default".into(),
                    uid: "u".into(),
                },
                audiences: vec![jwt::ISSUER.into()],
                expiration_seconds: 600,
                pod: None,
                secret: None,
                node: None,
            },
            now,
        )
        .unwrap();
        assert!(auth.claims(&token, now).is_ok());
        assert!(auth.claims(&token, now + 1).is_ok());
        assert_eq!(
            auth.claims(&token, now + 600 + jwt::LEEWAY_SECONDS + 1),
            Err(TokenError::Expired)
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
    }
}
