//! MutatingWebhookConfiguration (admissionregistration.k8s.io, admissionregistration.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct MutatingWebhookConfiguration;

impl Strategy for MutatingWebhookConfiguration {
    fn defaults(&self, obj: &mut Value, creating: bool) {
        crate::types::admissionregistration::webhook_configuration_defaults(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            obj,
            creating,
        );
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::admissionregistration::webhook_configuration_validation(
            &mut c,
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            obj,
        );
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        crate::types::admissionregistration::webhook_configuration_columns()
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        let mut out = vec![json!(crate::object::name(o))];
        crate::types::admissionregistration::webhook_configuration_cells(o, &mut out)?;
        Some(out)
    }
}
