//! CertificateSubjectRestriction: the kube-apiserver-client signer never issues for the
//! `system:masters` group (that would be cluster-admin), as upstream's plugin refuses it.

use serde_json::Value;

use crate::admission::{forbidden, Attributes, Operation, Plugin, Verdict};
use crate::types::certificates::request;
use crate::types::registry::ResourceType;

pub struct CertificateSubjectRestriction;

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The group authorization always allows (cluster-admin without any binding).
const MASTERS: &str = "system:masters";

impl Plugin for CertificateSubjectRestriction {
    fn name(&self) -> &'static str {
        "CertificateSubjectRestriction"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation == Operation::Create && super::is_csr(rt)
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            let signer = obj
                .pointer("/spec/signerName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if signer != KUBE_APISERVER_CLIENT {
                return Ok(());
            }
            let parsed = obj
                .pointer("/spec/request")
                .and_then(Value::as_str)
                .and_then(request::decode_field)
                .and_then(|pem| request::parse(&pem).ok());
            // Validation already refused a request that does not parse.
            let Some(parsed) = parsed else {
                return Ok(());
            };
            if parsed.organizations.iter().any(|o| o == MASTERS) {
                return Err(forbidden(
                    attrs,
                    &format!("use of {signer} signer with system:masters group is not allowed"),
                ));
            }
            Ok(())
        })
    }
}
