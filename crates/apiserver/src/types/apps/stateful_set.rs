//! StatefulSet (apps, apps/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct StatefulSet;

impl Strategy for StatefulSet {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "replicas", json!(1));
        default(spec, "podManagementPolicy", json!("OrderedReady"));
        default(spec, "revisionHistoryLimit", json!(10));
        let us = child(spec, "updateStrategy");
        default(us, "type", json!("RollingUpdate"));
        if us["type"] == "RollingUpdate" {
            default(child(us, "rollingUpdate"), "partition", json!(0));
        }
        let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
        default(retention, "whenDeleted", json!("Retain"));
        default(retention, "whenScaled", json!("Retain"));
        each(spec, "volumeClaimTemplates", |t| {
            if let Some(s) = t.get_mut("spec") {
                pvc_spec(s);
            }
            default(t, "status", json!({"phase": "Pending"}));
        });
        template(obj, "/spec/template/spec");
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::apps::workload_validation(&mut c, "apps", "StatefulSet", obj);
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        // Everything but these is fixed at creation (its pods and claims depend on it).
        let fixed = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec.as_object_mut() {
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(k);
                }
            }
            spec
        };
        if fixed(old) != fixed(new) {
            c.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden");
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
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
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
        let mut out = vec![name];
        out.extend([
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            age(o),
            json!(cnames),
            json!(images),
        ]);
        Some(out)
    }
}
