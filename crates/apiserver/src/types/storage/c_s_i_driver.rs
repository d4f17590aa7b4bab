//! CSIDriver (storage.k8s.io, storage.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::types::strategy::Strategy;

pub struct CSIDriver;

impl Strategy for CSIDriver {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "attachRequired", json!(true));
        default(spec, "podInfoOnMount", json!(false));
        default(spec, "storageCapacity", json!(false));
        default(spec, "requiresRepublish", json!(false));
        default(spec, "seLinuxMount", json!(false));
        default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
        default(spec, "volumeLifecycleModes", json!(["Persistent"]));
    }
}
