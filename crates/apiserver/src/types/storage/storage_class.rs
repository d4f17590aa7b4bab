//! StorageClass (storage.k8s.io, storage.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct StorageClass;

impl Strategy for StorageClass {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        default(obj, "reclaimPolicy", json!("Delete"));
        default(obj, "volumeBindingMode", json!("Immediate"));
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if s(obj, "/provisioner").is_empty() {
            c.required("provisioner", "");
        }
        c.one_of(
            obj,
            "/reclaimPolicy",
            "reclaimPolicy",
            &["Delete", "Retain"],
            false,
        );
        c.one_of(
            obj,
            "/volumeBindingMode",
            "volumeBindingMode",
            &["Immediate", "WaitForFirstConsumer"],
            false,
        );
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let immutable = |c: &mut Causes, ptr: &str, field: &str| {
            if old.pointer(ptr) != new.pointer(ptr) {
                c.invalid(
                    field,
                    new.pointer(ptr).unwrap_or(&Value::Null),
                    "field is immutable",
                );
            }
        };
        immutable(&mut c, "/provisioner", "provisioner");
        immutable(&mut c, "/parameters", "parameters");
        immutable(&mut c, "/reclaimPolicy", "reclaimPolicy");
        immutable(&mut c, "/volumeBindingMode", "volumeBindingMode");
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let mut name_cell = object::name(o).to_string();
        if o.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
            .and_then(Value::as_str)
            == Some("true")
        {
            name_cell.push_str(" (default)");
        }
        out[0] = json!(name_cell);
        out.extend([
            json!(s(o, "/provisioner")),
            json!(s(o, "/reclaimPolicy")),
            json!(s(o, "/volumeBindingMode")),
            json!(o
                .get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()),
            age(o),
        ]);
        Some(out)
    }
}
