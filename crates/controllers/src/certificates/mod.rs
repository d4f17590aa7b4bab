//! The CertificateSigningRequest loops (upstream's csrsigning and csrapproving) and what they
//! share: the cluster CA they are handed, and the conditions they read and write.

pub mod approving;
pub mod kubelet_requests;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a request asks for, as the CA parsed it (its signature already checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSubject {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub email_addresses: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub uris: Vec<String>,
}

/// The cluster CA as the loops use it (the API server's crate implements it; the loops
/// never see its key).
pub trait CertificateAuthority: Send + Sync {
    /// Parse and verify a PEM certificate request.
    fn inspect(&self, request_pem: &[u8]) -> Result<RequestSubject, String>;
    /// A PEM certificate for the request, with `usages`, valid for `lifetime`.
    fn sign(
        &self,
        request_pem: &[u8],
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String, String>;
}

/// The CA in `Options` (cloneable, printable without its secrets).
#[derive(Clone)]
pub struct Ca(pub Arc<dyn CertificateAuthority>);

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

pub const GROUP: &str = "certificates.k8s.io";
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Whether the request has a condition of type `t` (status True).
pub fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
}

/// Whether the signer already answered: a certificate, or a Failed condition.
pub fn is_finished(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
        || has_condition(csr, "Failed")
}

/// Append a True condition with its times set now.
pub fn append_condition(csr: &mut CertificateSigningRequest, t: &str, reason: &str, message: &str) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = csr.status.get_or_insert_with(Default::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: t.to_string(),
            status: "True".to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
}
