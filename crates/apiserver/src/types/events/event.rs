//! Event (events.k8s.io/v1): printed as the core Event is, selected by its `regarding`
//! fields — everything capstan knows about the kind, in one place.

use serde_json::Value;

use crate::types::strategy::Strategy;

pub struct Event;

impl Strategy for Event {
    /// Printed as a core/v1 Event is (kubectl's events table reads both the same way).
    fn columns(&self) -> Option<Vec<Value>> {
        crate::types::core::event::Event.columns()
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        crate::types::core::event::Event.cells(obj)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
        ]
    }
}
