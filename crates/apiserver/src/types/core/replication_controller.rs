//! ReplicationController (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct ReplicationController;

impl Strategy for ReplicationController {
    /// A delete naming no propagation policy orphans the pods, as upstream keeps for
    /// core/v1 ReplicationControllers.
    fn orphans_dependents_by_default(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        label_selector_from_template(obj);
        default(child(obj, "spec"), "replicas", json!(1));
        default(child(obj, "spec"), "minReadySeconds", json!(0));
        template(obj, "/spec/template/spec");
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::apps::workload_validation(&mut c, "", "ReplicationController", obj);
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        crate::types::apps::replica_set_columns()
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        let mut out = vec![json!(crate::object::name(o))];
        crate::types::apps::replica_set_cells(o, &mut out)?;
        Some(out)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }
}
