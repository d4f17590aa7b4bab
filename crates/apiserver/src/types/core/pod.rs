//! Pod (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Pod;

impl Strategy for Pod {
    /// A pod on a node is marked and its kubelet removes it after the grace period.
    fn graceful_delete(
        &self,
        obj: &Value,
        grace_period_seconds: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> crate::types::strategy::GracefulDelete {
        super::pod_graceful_delete::decide(obj, grace_period_seconds, now)
    }

    /// `binding` is served here (the scheduler's write); the rest need a node agent.
    fn own_subresources(&self) -> &'static [&'static str] {
        &["binding", "eviction"]
    }

    fn defaults(&self, obj: &mut Value, creating: bool) {
        use crate::types::shared::defaulting::*;
        if let Some(spec) = obj.get_mut("spec") {
            pod_spec(spec);
        }
        if creating {
            pod_on_create(obj);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        if let Some(spec) = obj.get("spec") {
            pod_spec(&mut c, spec, "spec");
        } else {
            c.required("spec.containers", "");
        }
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        // Only images, activeDeadlineSeconds and added tolerations may change.
        let strip = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            for key in ["containers", "initContainers"] {
                if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
                    for ct in cs {
                        if let Some(m) = ct.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = spec.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                m.remove("terminationGracePeriodSeconds");
                m.remove("schedulingGates");
            }
            spec
        };
        if strip(old) != strip(new) {
            c.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)");
        }
        let old_tols = arr(old, "/spec/tolerations");
        let new_tols = arr(new, "/spec/tolerations");
        if old_tols.iter().any(|t| !new_tols.contains(t)) {
            c.forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            );
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
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        out.extend(pod_cells(o));
        Some(out)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }
}
