//! The tokens of a pod's projected `serviceAccountToken` sources: requested by TokenRequest
//! (bound to the pod by name and uid), kept per audience and lifetime, and renewed as the
//! kubelet's token manager does — past 80% of their life, or older than 24 hours.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

/// The kubelet's default for a source without `expirationSeconds`.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token is renewed once it is older than this, whatever its lifetime.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
struct Held {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

/// Whether a token issued at `issued`, expiring at `expires`, is due for renewal at `now`.
fn needs_refresh(issued: SystemTime, expires: SystemTime, now: SystemTime) -> bool {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let age = now.duration_since(issued).unwrap_or_default();
    age >= lifetime.mul_f64(0.8) || age > MAX_AGE
}

/// One pod's tokens (the worker keeps it across syncs).
pub struct PodTokens {
    client: kube::Client,
    namespace: String,
    pod_name: String,
    pod_uid: String,
    service_account: String,
    held: HashMap<(String, i64), Held>,
}

impl PodTokens {
    pub fn new(client: kube::Client, pod: &Pod) -> PodTokens {
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        PodTokens {
            client,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account,
            held: HashMap::new(),
        }
    }

    /// How long until the first token held is due for renewal (None: none held).
    pub fn next_refresh(&self) -> Option<Duration> {
        let now = SystemTime::now();
        self.held
            .values()
            .map(|h| {
                let lifetime = h.expires.duration_since(h.issued).unwrap_or_default();
                let due = h.issued + lifetime.mul_f64(0.8).min(MAX_AGE);
                due.duration_since(now).unwrap_or_default()
            })
            .min()
    }

    /// The token for `audience` (empty: the API server's own) and `expiration_seconds`,
    /// requested anew when the one held is due for renewal.
    pub async fn token(
        &mut self,
        audience: &str,
        expiration_seconds: i64,
    ) -> Result<Vec<u8>, String> {
        let key = (audience.to_string(), expiration_seconds);
        let now = SystemTime::now();
        if let Some(held) = self.held.get(&key) {
            if !needs_refresh(held.issued, held.expires, now) {
                return Ok(held.token.clone().into_bytes());
            }
        }
        match self.request(audience, expiration_seconds).await {
            Ok(fresh) => {
                let token = fresh.token.clone().into_bytes();
                self.held.insert(key, fresh);
                Ok(token)
            }
            // A renewal that fails keeps the old token while it is still valid, as the
            // kubelet does: the API server may be briefly away.
            Err(e) => match self.held.get(&key).filter(|h| h.expires > now) {
                Some(held) => {
                    tracing::warn!(pod = %self.pod_name, namespace = %self.namespace, error = %e, "renewing a service account token failed; keeping the current one");
                    Ok(held.token.clone().into_bytes())
                }
                None => Err(e),
            },
        }
    }

    async fn request(&self, audience: &str, expiration_seconds: i64) -> Result<Held, String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience.to_string()]
                },
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let issued = SystemTime::now();
        let got = api
            .create_token_request(&self.service_account, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                format!(
                    "requesting a token for service account {:?}: {e}",
                    self.service_account
                )
            })?;
        let status = got
            .status
            .ok_or_else(|| "the TokenRequest came back without a token".to_string())?;
        tracing::debug!(pod = %self.pod_name, namespace = %self.namespace, audience, "service account token issued");
        Ok(Held {
            token: status.token,
            issued,
            expires: SystemTime::from(status.expiration_timestamp.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_eighty_percent_of_the_life_or_after_a_day() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = t0 + Duration::from_secs(3600);
        assert!(!needs_refresh(t0, hour, t0));
        assert!(!needs_refresh(t0, hour, t0 + Duration::from_secs(2879)));
        assert!(needs_refresh(t0, hour, t0 + Duration::from_secs(2880)));
        let year = t0 + Duration::from_secs(365 * 24 * 3600);
        assert!(!needs_refresh(
            t0,
            year,
            t0 + Duration::from_secs(24 * 3600)
        ));
        assert!(needs_refresh(
            t0,
            year,
            t0 + Duration::from_secs(24 * 3600 + 1)
        ));
        // A clock that went backwards renews nothing early.
        assert!(!needs_refresh(t0, hour, t0 - Duration::from_secs(10)));
    }
}
