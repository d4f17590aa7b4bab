//! CertificateSigning: a `/status` write that sets or changes `status.certificate` needs the
//! `sign` verb on the request's signer, as upstream's plugin.

use serde_json::Value;

use crate::admission::{forbidden, Attributes, Operation, Plugin, Verdict};
use crate::types::registry::ResourceType;

pub struct CertificateSigning;

impl Plugin for CertificateSigning {
    fn name(&self) -> &'static str {
        "CertificateSigning"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation == Operation::Update && super::is_csr(rt)
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            if attrs.target.subresource.as_deref() != Some("status") {
                return Ok(());
            }
            let cert = |v: Option<&Value>| {
                v.and_then(|v| v.pointer("/status/certificate"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            if cert(Some(obj)) == cert(old) {
                return Ok(());
            }
            let signer = obj
                .pointer("/spec/signerName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let user = super::requester();
            if super::authorized_for_signer(attrs.state, &user, "sign", signer).await {
                return Ok(());
            }
            tracing::debug!(user = %user.username, csr = attrs.name, signer, "not permitted to sign");
            Err(forbidden(
                attrs,
                &format!("user not permitted to sign requests with signerName {signer:?}"),
            ))
        })
    }
}
