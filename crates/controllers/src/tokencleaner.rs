//! The bootstrap token cleaner (upstream's tokencleaner): a bootstrap token Secret in
//! kube-system goes once its `expiration` has passed.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::context::Context;

const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct State {
    api: Api<Secret>,
    errors: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    let st = Arc::new(State {
        api: api.clone(),
        errors: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    });
    let config = watcher::Config::default().fields(&format!("type={SECRET_TYPE}"));
    capstan_slim::controller(api, config)
        .run(reconcile, error_policy, st)
        .await;
}

/// How long until the token Secret expires (zero: expired); None: it never does. An
/// unparsable expiration counts as expired, as upstream's.
pub fn time_left(secret: &Secret, now: Timestamp) -> Option<Duration> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let raw = secret.data.as_ref()?.get("expiration")?;
    let text = String::from_utf8_lossy(&raw.0);
    let Ok(at) = text.trim().parse::<Timestamp>() else {
        return Some(Duration::ZERO);
    };
    let left_ms = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)))
}

async fn reconcile(secret: Arc<Secret>, st: Arc<State>) -> Result<Action, Error> {
    let Some(left) = time_left(&secret, Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: secret.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match st.api.delete(&secret.name_any(), &params).await {
        Ok(_) => tracing::info!(secret = %secret.name_any(), "expired bootstrap token deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    st.errors.reset(&secret.name_any());
    Ok(Action::await_change())
}

fn error_policy(secret: Arc<Secret>, err: &Error, st: Arc<State>) -> Action {
    let (attempts, delay) = st.errors.failed(&secret.name_any());
    tracing::warn!(secret = %secret.name_any(), error = %err, attempts, "tokencleaner: delete failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expired_tokens_are_found() {
        // `data` holds base64: "2026-01-01T00:00:10Z" and "never".
        let secret = |exp_b64: &str| -> Secret {
            serde_json::from_value(json!({
                "metadata": {"name": "bootstrap-token-abcdef"},
                "type": SECRET_TYPE,
                "data": {"expiration": exp_b64}
            }))
            .unwrap()
        };
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let s = secret("MjAyNi0wMS0wMVQwMDowMDoxMFo=");
        assert_eq!(
            time_left(&s, at("2026-01-01T00:00:04Z")),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            time_left(&s, at("2026-01-01T00:00:11Z")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_left(&secret("bmV2ZXI="), at("2026-01-01T00:00:00Z")),
            Some(Duration::ZERO)
        );
    }
}
