//! DaemonSet (apps, apps/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct DaemonSet;

impl Strategy for DaemonSet {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "revisionHistoryLimit", json!(10));
        let us = child(spec, "updateStrategy");
        default(us, "type", json!("RollingUpdate"));
        if us["type"] == "RollingUpdate" {
            let ru = child(us, "rollingUpdate");
            default(ru, "maxUnavailable", json!(1));
            default(ru, "maxSurge", json!(0));
        }
        template(obj, "/spec/template/spec");
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::apps::workload_validation(&mut c, "apps", "DaemonSet", obj);
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::apps::workload_selector_immutable(&mut c, "apps", "DaemonSet", old, new);
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));
        let tpl = o
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        let (cnames, images) = containers(&tpl);
        let sel = or_none(selector(o.pointer("/spec/selector")));
        let mut out = vec![name];
        out.extend([
            json!(i(o, "/status/desiredNumberScheduled")),
            json!(i(o, "/status/currentNumberScheduled")),
            json!(i(o, "/status/numberReady")),
            json!(i(o, "/status/updatedNumberScheduled")),
            json!(i(o, "/status/numberAvailable")),
            or_none(selector(o.pointer("/spec/template/spec/nodeSelector"))),
            age(o),
            json!(cnames),
            json!(images),
            sel,
        ]);
        Some(out)
    }
}
