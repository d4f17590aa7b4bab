//! The CSR approving controller (upstream's csrapproving): a node client certificate request
//! is approved when its requester may `create` `certificatesigningrequests/nodeclient` (or
//! `/selfnodeclient` for a node renewing its own), decided by a SubjectAccessReview.

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::{kubelet_requests, Ca, RequestSubject};
use crate::backoff::Backoff;
use crate::context::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("unable to parse csr {name:?}: {why}")]
    Parse { name: String, why: String },
}

struct State {
    client: Client,
    api: Api<CertificateSigningRequest>,
    ca: Ca,
    errors: Backoff,
}

/// One kind of request the approver recognizes: the permission it asks about.
struct Recognizer {
    subresource: &'static str,
    recognize: fn(&CertificateSigningRequest, &RequestSubject) -> bool,
    message: &'static str,
}

fn is_node_client(csr: &CertificateSigningRequest, req: &RequestSubject) -> bool {
    csr.spec.signer_name == super::KUBE_APISERVER_CLIENT_KUBELET
        && kubelet_requests::validate_client(req, csr.spec.usages.as_deref().unwrap_or_default())
            .is_ok()
}

fn is_self_node_client(csr: &CertificateSigningRequest, req: &RequestSubject) -> bool {
    is_node_client(csr, req) && csr.spec.username.as_deref() == Some(req.common_name.as_str())
}

/// Upstream's order: a node renewing its own certificate first.
const RECOGNIZERS: &[Recognizer] = &[
    Recognizer {
        subresource: "selfnodeclient",
        recognize: is_self_node_client,
        message: "Auto approving self kubelet client certificate after SubjectAccessReview.",
    },
    Recognizer {
        subresource: "nodeclient",
        recognize: is_node_client,
        message: "Auto approving kubelet client certificate after SubjectAccessReview.",
    },
];

pub async fn run(ctx: Arc<Context>) {
    let Some(ca) = ctx.opts.cluster_signing_ca.clone() else {
        tracing::info!("csrapproving: no cluster CA configured; not approving");
        return;
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let st = Arc::new(State {
        client: ctx.client.clone(),
        api: api.clone(),
        ca,
        errors: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    capstan_slim::controller(api, watcher::Config::default())
        .run(reconcile, error_policy, st)
        .await;
}

/// Whether the requester may `create` `certificatesigningrequests/<subresource>`.
async fn allowed(
    client: &Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, kube::Error> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(super::GROUP.into()),
                resource: Some("certificatesigningrequests".into()),
                verb: Some("create".into()),
                subresource: Some(subresource.into()),
                version: Some("*".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, st: Arc<State>) -> Result<Action, Error> {
    if super::is_finished(&csr)
        || super::has_condition(&csr, "Approved")
        || super::has_condition(&csr, "Denied")
        || csr.spec.signer_name != super::KUBE_APISERVER_CLIENT_KUBELET
    {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let req = st
        .ca
        .0
        .inspect(&csr.spec.request.0)
        .map_err(|why| Error::Parse {
            name: name.clone(),
            why,
        })?;
    let mut tried = Vec::new();
    for r in RECOGNIZERS {
        if !(r.recognize)(&csr, &req) {
            continue;
        }
        tried.push(r.subresource);
        if !allowed(&st.client, &csr, r.subresource).await? {
            continue;
        }
        let mut approved = (*csr).clone();
        super::append_condition(&mut approved, "Approved", "AutoApproved", r.message);
        match st
            .api
            .replace_subresource("approval", &name, &PostParams::default(), &approved)
            .await
        {
            Ok(_) => {
                tracing::info!(csr = %name, requester = csr.spec.username.as_deref().unwrap_or(""), permission = r.subresource, "auto-approved");
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        st.errors.reset(&name);
        return Ok(Action::await_change());
    }
    if !tried.is_empty() {
        // Upstream's IgnorableError: recognized, but the requester may not have it approved.
        tracing::debug!(csr = %name, ?tried, "recognized but the subject access review was not approved");
    }
    Ok(Action::await_change())
}

fn error_policy(csr: Arc<CertificateSigningRequest>, err: &Error, st: Arc<State>) -> Action {
    let (attempts, delay) = st.errors.failed(&csr.name_any());
    tracing::warn!(csr = %csr.name_any(), error = %err, attempts, "csrapproving failed; retrying");
    Action::requeue(delay)
}
