//! CertificateApproval: a write to `certificatesigningrequests/approval` needs the `approve`
//! verb on the request's signer (`signers` in certificates.k8s.io), as upstream's plugin.

use serde_json::Value;

use crate::admission::{forbidden, Attributes, Operation, Plugin, Verdict};
use crate::types::registry::ResourceType;

pub struct CertificateApproval;

impl Plugin for CertificateApproval {
    fn name(&self) -> &'static str {
        "CertificateApproval"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation == Operation::Update && super::is_csr(rt)
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            if attrs.target.subresource.as_deref() != Some("approval") {
                return Ok(());
            }
            let signer = obj
                .pointer("/spec/signerName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let user = super::requester();
            if super::authorized_for_signer(attrs.state, &user, "approve", signer).await {
                return Ok(());
            }
            tracing::debug!(user = %user.username, csr = attrs.name, signer, "not permitted to approve");
            Err(forbidden(
                attrs,
                &format!("user not permitted to approve requests with signerName {signer:?}"),
            ))
        })
    }
}
