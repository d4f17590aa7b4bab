//! Pod (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Pod;

const EPHEMERAL: &str = "ephemeralcontainers";

fn set_ephemeral(pod: &mut Value, list: Option<Value>) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match list {
        Some(l) if !l.is_null() => {
            spec.insert("ephemeralContainers".into(), l);
        }
        _ => {
            spec.remove("ephemeralContainers");
        }
    }
}

/// Fields a container has that an ephemeral one may not set (upstream's
/// validateEphemeralContainers): it runs for debugging, once, with no guarantees.
const NOT_FOR_EPHEMERAL: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// Ephemeral containers are only ever added: one that exists may not change or go; a new
/// one needs a unique name and an image, sets none of `NOT_FOR_EPHEMERAL`, and may target
/// only a container of the pod.
fn ephemeral_update(c: &mut crate::types::shared::validating::Causes, old: &Value, new: &Value) {
    use crate::types::shared::validating::arr;
    let old_list = arr(old, "/spec/ephemeralContainers");
    let new_list = arr(new, "/spec/ephemeralContainers");
    for o in old_list {
        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
        match new_list
            .iter()
            .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(n) if n == o => {}
            Some(_) => c.forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be changed"),
            ),
            None => c.forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be removed"),
            ),
        }
    }
    let regular: Vec<String> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .flat_map(|p| arr(new, p))
        .filter_map(|ct| ct.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut names: std::collections::HashSet<String> = regular.iter().cloned().collect();
    for (i, e) in new_list.iter().enumerate() {
        let p = format!("spec.ephemeralContainers[{i}]");
        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            c.required(&format!("{p}.name"), "");
        } else if !crate::types::validation::is_dns1123_label(name) {
            c.invalid(
                &format!("{p}.name"),
                &json!(name),
                crate::types::shared::validating::DNS1123_LABEL_MSG,
            );
        } else if !names.insert(name.to_string()) {
            c.duplicate(&format!("{p}.name"), &json!(name));
        }
        if old_list.iter().any(|o| o == e) {
            continue;
        }
        if e.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            c.required(&format!("{p}.image"), "");
        }
        for field in NOT_FOR_EPHEMERAL {
            // A zero value is unset (kubectl debug sends `resources: {}`).
            let set = match e.get(*field) {
                None | Some(Value::Null) => false,
                Some(Value::Object(m)) => !m.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                Some(_) => true,
            };
            if set {
                c.forbidden(
                    &format!("{p}.{field}"),
                    "cannot be set for an Ephemeral Container",
                );
            }
        }
        if let Some(target) = e.get("targetContainerName").and_then(Value::as_str) {
            if !regular.iter().any(|r| r == target) {
                c.not_found(&format!("{p}.targetContainerName"), &json!(target));
            }
        }
    }
}

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

    /// `binding` is served here (the scheduler's write); `ephemeralcontainers` is an update
    /// of that list alone; the rest are the node's.
    fn own_subresources(&self) -> &'static [&'static str] {
        &["binding", "eviction", "ephemeralcontainers"]
    }

    /// `pods/ephemeralcontainers` changes `spec.ephemeralContainers` and nothing else; every
    /// other endpoint keeps the stored list (upstream's EphemeralContainersStrategy).
    fn prepare_for_update(
        &self,
        new: &mut Value,
        old: &Value,
        subresource: Option<&str>,
        has_status: bool,
    ) {
        if subresource == Some(EPHEMERAL) {
            let list = new.pointer("/spec/ephemeralContainers").cloned();
            crate::types::strategy::reset_to_stored(new, old);
            set_ephemeral(new, list);
            return;
        }
        crate::types::strategy::keep_status(new, old, subresource, has_status);
        set_ephemeral(new, old.pointer("/spec/ephemeralContainers").cloned());
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
                // Their own rules, below (only `pods/ephemeralcontainers` changes them).
                m.remove("ephemeralContainers");
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
        ephemeral_update(&mut c, old, new);
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
