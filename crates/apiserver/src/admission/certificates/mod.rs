//! upstream's certificates admission plugins (CertificateApproval, CertificateSigning,
//! CertificateSubjectRestriction), the requester a new CSR records, and the signer-name
//! authorization they share.

pub mod approval;
pub mod requester;
pub mod signing;
pub mod subject_restriction;

use crate::serving::request_info::RequestInfo;
use crate::serving::user_info::UserInfo;
use crate::types::registry::ResourceType;
use crate::AppState;

pub const GROUP: &str = "certificates.k8s.io";

/// Whether a request addresses certificatesigningrequests.certificates.k8s.io.
pub fn is_csr(rt: &ResourceType) -> bool {
    rt.group == GROUP && rt.plural == "certificatesigningrequests"
}

/// upstream's IsAuthorizedForSignerName: `verb` on `signers` named `signer_name`, else on
/// the wildcard `<domain>/*`.
pub async fn authorized_for_signer(
    state: &AppState,
    user: &UserInfo,
    verb: &str,
    signer_name: &str,
) -> bool {
    let ask = |name: String| RequestInfo {
        resource_request: true,
        verb: verb.to_string(),
        api_group: GROUP.to_string(),
        resource: "signers".to_string(),
        name,
        ..RequestInfo::default()
    };
    if state
        .authz
        .decide_current(state, user, &ask(signer_name.to_string()))
        .await
        .allowed()
    {
        return true;
    }
    let Some((domain, _)) = signer_name.split_once('/') else {
        return false;
    };
    state
        .authz
        .decide_current(state, user, &ask(format!("{domain}/*")))
        .await
        .allowed()
}

/// The user the request's admission runs for (an empty one if none: never allowed).
fn requester() -> UserInfo {
    crate::audit::notes::user()
        .map(|u| u.0.as_ref().clone())
        .unwrap_or_default()
}
