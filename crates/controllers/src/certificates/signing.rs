//! The CSR signing controller (upstream's csrsigning): approved requests for the three
//! built-in signers get a certificate from the cluster CA, or a Failed condition saying why
//! the signer cannot honour them; other signers' requests are left alone.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;

use super::{kubelet_requests, Ca};
use crate::backoff::Backoff;
use crate::context::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("signing {name}: {why}")]
    Sign { name: String, why: String },
}

struct State {
    api: Api<CertificateSigningRequest>,
    ca: Ca,
    max_lifetime: Duration,
    errors: Backoff,
}

/// The shortest certificate upstream issues (and the shortest `expirationSeconds`).
const MIN_LIFETIME: Duration = Duration::from_secs(600);

pub async fn run(ctx: Arc<Context>) {
    let Some(ca) = ctx.opts.cluster_signing_ca.clone() else {
        tracing::info!("csrsigning: no cluster signing CA configured; not signing");
        return;
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let st = Arc::new(State {
        api: api.clone(),
        ca,
        max_lifetime: ctx.opts.cluster_signing_duration,
        errors: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    capstan_slim::controller(api, watcher::Config::default())
        .run(reconcile, error_policy, st)
        .await;
}

/// What the signer checks before signing for `signer_name`; None: not one of ours.
fn check(
    signer_name: &str,
    req: &super::RequestSubject,
    usages: &[String],
) -> Option<Result<(), String>> {
    Some(match signer_name {
        super::KUBE_APISERVER_CLIENT => kubelet_requests::validate_apiserver_client_usages(usages),
        super::KUBE_APISERVER_CLIENT_KUBELET => kubelet_requests::validate_client(req, usages),
        super::KUBELET_SERVING => kubelet_requests::validate_serving(req, usages),
        _ => return None,
    })
}

/// upstream's duration(): the request's `expirationSeconds` capped at the signer's maximum,
/// never under ten minutes.
fn lifetime(expiration_seconds: Option<i32>, max: Duration) -> Duration {
    match expiration_seconds {
        None => max,
        Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0))
            .clamp(MIN_LIFETIME, max.max(MIN_LIFETIME)),
    }
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, st: Arc<State>) -> Result<Action, Error> {
    let signer = csr.spec.signer_name.as_str();
    if !super::has_condition(&csr, "Approved")
        || super::has_condition(&csr, "Denied")
        || super::is_finished(&csr)
        || ![
            super::KUBE_APISERVER_CLIENT,
            super::KUBE_APISERVER_CLIENT_KUBELET,
            super::KUBELET_SERVING,
        ]
        .contains(&signer)
    {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let pem = &csr.spec.request.0;
    let subject = st.ca.0.inspect(pem).map_err(|why| Error::Sign {
        name: name.clone(),
        why: format!("unable to parse csr: {why}"),
    })?;
    let mut updated = (*csr).clone();
    match check(signer, &subject, &usages) {
        None => return Ok(Action::await_change()),
        Some(Err(why)) => {
            super::append_condition(&mut updated, "Failed", "SignerValidationFailure", &why);
            tracing::info!(csr = %name, signer, reason = %why, "signer cannot honour the request");
        }
        Some(Ok(())) => {
            let life = lifetime(csr.spec.expiration_seconds, st.max_lifetime);
            let cert = st
                .ca
                .0
                .sign(pem, &usages, life)
                .map_err(|why| Error::Sign {
                    name: name.clone(),
                    why,
                })?;
            updated
                .status
                .get_or_insert_with(Default::default)
                .certificate = Some(ByteString(cert.into_bytes()));
            tracing::info!(csr = %name, signer, lifetime_s = life.as_secs(), "certificate issued");
        }
    }
    match st
        .api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {}
        // Changed meanwhile: the watch brings the new version.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    st.errors.reset(&name);
    Ok(Action::await_change())
}

fn error_policy(csr: Arc<CertificateSigningRequest>, err: &Error, st: Arc<State>) -> Action {
    let (attempts, delay) = st.errors.failed(&csr.name_any());
    tracing::warn!(csr = %csr.name_any(), error = %err, attempts, "csrsigning failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_is_capped_and_floored() {
        let year = Duration::from_secs(365 * 86400);
        assert_eq!(lifetime(None, year), year);
        assert_eq!(lifetime(Some(3600), year), Duration::from_secs(3600));
        assert_eq!(lifetime(Some(10), year), MIN_LIFETIME);
        assert_eq!(lifetime(Some(i32::MAX), year), year);
    }
}
