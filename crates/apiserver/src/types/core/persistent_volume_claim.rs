//! PersistentVolumeClaim (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct PersistentVolumeClaim;

impl Strategy for PersistentVolumeClaim {
    fn defaults(&self, obj: &mut Value, creating: bool) {
        use crate::types::shared::defaulting::*;
        if let Some(spec) = obj.get_mut("spec") {
            pvc_spec(spec);
        }
        if creating {
            obj["status"] = json!({"phase": "Pending"});
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let modes = arr(obj, "/spec/accessModes");
        if modes.is_empty() && obj.pointer("/spec/dataSource").is_none() {
            c.required("spec.accessModes", "at least 1 access mode is required");
        }
        access_modes(&mut c, obj);
        match obj.pointer("/spec/resources/requests/storage") {
            None => c.required("spec.resources[storage]", ""),
            Some(q) if q.as_str().and_then(quantity).is_none() => {
                c.invalid("spec.resources.requests[storage]", q, QUANTITY_MSG)
            }
            _ => {}
        }
        c.one_of(
            obj,
            "/spec/volumeMode",
            "spec.volumeMode",
            &["Block", "Filesystem"],
            false,
        );
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        // The binder may set volumeName once; a bound claim may grow its storage.
        let bound = s(old, "/status/phase") == "Bound";
        let set_once = s(old, "/spec/volumeName").is_empty();
        let fixed = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec.as_object_mut() {
                m.remove("volumeAttributesClassName");
                if set_once {
                    m.remove("volumeName");
                }
            }
            if bound {
                if let Some(req) = spec
                    .pointer_mut("/resources/requests")
                    .and_then(Value::as_object_mut)
                {
                    req.remove("storage");
                }
            }
            spec
        };
        if fixed(old) != fixed(new) {
            c.forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims");
        }
        let size = |v: &Value| {
            v.pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(quantity)
        };
        if let (Some(before), Some(after)) = (size(old), size(new)) {
            if after < before {
                c.forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than previous value",
                );
            }
        }
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        out.extend([
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(arr(o, "/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            or_none(s(o, "/spec/volumeAttributesClassName").to_string()),
            age(o),
            json!(s(o, "/spec/volumeMode")),
        ]);
        Some(out)
    }
}
