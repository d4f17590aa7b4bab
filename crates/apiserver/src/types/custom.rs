//! The strategy of a custom resource version, built from its CRD: schema defaults and
//! validation (CEL rules run in the REST path, on the CRD's runner), status reset.

use std::sync::Arc;

use serde_json::Value;

use crate::status::Cause;
use crate::types::crd::CustomVersion;
use crate::types::strategy::Strategy;

pub struct CustomResource {
    pub version: Arc<CustomVersion>,
}

impl CustomResource {
    fn schema_defaults(&self, obj: &mut Value) {
        if let Some(schema) = &self.version.schema {
            capstan_schema::apply_defaults(schema, obj);
        }
    }
}

impl Strategy for CustomResource {
    /// Schema defaults come first (upstream defaults at decode), then a type with a status
    /// subresource drops the status it was sent.
    fn prepare_for_create(&self, obj: &mut Value, has_status: bool) {
        self.schema_defaults(obj);
        if has_status {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }

    fn defaults(&self, obj: &mut Value, creating: bool) {
        if !creating {
            self.schema_defaults(obj);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let Some(schema) = &self.version.schema else {
            return Vec::new();
        };
        capstan_schema::validate(schema, obj, &capstan_schema::FieldPath::default())
            .into_iter()
            // metadata is ObjectMeta, checked by validate_metadata, whatever the schema says.
            .filter(|v| v.field != "metadata" && !v.field.starts_with("metadata."))
            .map(|v| Cause {
                reason: v.reason(),
                message: v.message(),
                field: v.field,
            })
            .collect()
    }
}
