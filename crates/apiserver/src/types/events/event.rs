//! Event (events.k8s.io, events.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::types::strategy::Strategy;

pub struct Event;

impl Strategy for Event {
    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;

        Some(vec![
                    described_col("Last Seen", "string", "", "Time when this Event was last observed.", 0),
                    described_col("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
                    described_col("Reason", "string", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
                    described_col("Object", "string", "", "The object that this event is about.", 0),
                    described_col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
                ])
    }

    fn cells(&self, obj: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        Some({
            let last = obj
                .get("lastTimestamp")
                .or_else(|| obj.get("eventTime"))
                .or_else(|| obj.get("deprecatedLastTimestamp"))
                .and_then(Value::as_str)
                .or_else(|| object::meta_str(obj, "creationTimestamp"));
            let regarding = obj.get("involvedObject").or_else(|| obj.get("regarding"));
            let target = regarding.map_or(String::new(), |r| {
                format!(
                    "{}/{}",
                    r.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_lowercase(),
                    r.get("name").and_then(Value::as_str).unwrap_or("")
                )
            });
            let text = |f: &str| json!(obj.get(f).and_then(Value::as_str).unwrap_or(""));
            let message = obj
                .get("message")
                .or_else(|| obj.get("note"))
                .and_then(Value::as_str)
                .unwrap_or("");
            vec![
                json!(object::age(last)),
                text("type"),
                text("reason"),
                json!(target),
                json!(message),
            ]
        })
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
