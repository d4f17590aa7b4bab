//! CustomResourceDefinition (apiextensions.k8s.io, apiextensions.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct CustomResourceDefinition;

impl Strategy for CustomResourceDefinition {
    /// Defaults at creation, and the status only the CRD loop writes.
    fn prepare_for_create(&self, obj: &mut Value, has_status: bool) {
        crate::types::crd::apply_defaults(obj);
        if has_status {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }

    fn defaults(&self, obj: &mut Value, creating: bool) {
        if !creating {
            crate::types::crd::apply_defaults(obj);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        crate::types::crd::validate(obj, None)
    }

    /// Only the rules that compare with the stored CRD (the rest ran in `validate`).
    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        crate::types::crd::validate(new, Some(old))
            .into_iter()
            .filter(|c| c.field == "spec.scope" || c.field == "status.storedVersions")
            .filter(|c| c.message.contains("immutable") || c.message.contains("must appear"))
            .collect()
    }

    /// Deleting a CRD first deletes its objects (the cleanup finalizer, added here so no
    /// apply can have removed it).
    fn deletion_is_two_phase(&self) -> bool {
        true
    }

    fn prepare_for_delete(&self, marked: &mut Value) {
        crate::types::crd::add_finalizer(marked);
    }

    fn changes_served_types(&self) -> bool {
        true
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = described_col(
            "Name",
            "string",
            "name",
            "Name must be unique within a namespace.",
            0,
        );
        Some(vec![
                    name,
                    described_col("Created At", "date", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
                ])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(obj));
        Some(vec![
            name,
            json!(object::meta_str(obj, "creationTimestamp").unwrap_or("")),
        ])
    }
}
