//! The requester of a new CertificateSigningRequest: `spec.username`, `uid`, `groups` and
//! `extra` are the caller's (upstream's strategy sets them in PrepareForCreate; here the
//! caller is known to admission, not to the kind's strategy).

use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin, Verdict};
use crate::types::registry::ResourceType;

pub struct CertificateRequester;

impl Plugin for CertificateRequester {
    fn name(&self) -> &'static str {
        "CertificateRequester"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        operation == Operation::Create && super::is_csr(rt)
    }

    fn mutate<'a>(
        &'a self,
        _attrs: &'a Attributes<'a>,
        obj: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            let user = super::requester();
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return Ok(());
            };
            spec.insert("username".into(), json!(user.username));
            if !user.uid.is_empty() {
                spec.insert("uid".into(), json!(user.uid));
            }
            if !user.groups.is_empty() {
                spec.insert("groups".into(), json!(user.groups));
            }
            if !user.extra.is_empty() {
                spec.insert("extra".into(), json!(user.extra));
            }
            Ok(())
        })
    }
}
