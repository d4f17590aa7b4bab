//! Job (batch, batch/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Job;

impl Strategy for Job {
    /// A delete naming no propagation policy orphans the pods, as upstream keeps for
    /// batch/v1 Jobs.
    fn orphans_dependents_by_default(&self) -> bool {
        true
    }

    fn defaults(&self, obj: &mut Value, creating: bool) {
        use crate::types::shared::defaulting::*;
        job_spec(child(obj, "spec"));
        template(obj, "/spec/template/spec");

        if creating {
            // The selector names the Job's own uid (upstream's generated selector).
            let uid = crate::object::meta_str(obj, "uid")
                .unwrap_or("")
                .to_string();
            job_selector(obj, &uid);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        job(&mut c, obj, "spec", "/spec");
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
        immutable(&mut c, "/spec/selector", "spec.selector");
        immutable(&mut c, "/spec/template", "spec.template");
        immutable(&mut c, "/spec/completionMode", "spec.completionMode");
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
            ("Completions", "string", 0),
            ("Duration", "string", 0),
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
        let conds = arr(o, "/status/conditions");
        let has = |t: &str| {
            conds
                .iter()
                .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
        };
        // upstream's printJob: the conditions decide, a deleted Job is Terminating.
        let status = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if o.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else if has("Suspended") {
            "Suspended"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        let completions = o.pointer("/spec/completions").and_then(Value::as_i64);
        let done = i(o, "/status/succeeded");
        let duration = match (
            o.pointer("/status/startTime").and_then(Value::as_str),
            o.pointer("/status/completionTime").and_then(Value::as_str),
        ) {
            (Some(start), None) => duration_since(start),
            // A finished Job's duration is completion minus start, as upstream prints it.
            (Some(start), Some(end)) => match (
                chrono::DateTime::parse_from_rfc3339(start),
                chrono::DateTime::parse_from_rfc3339(end),
            ) {
                (Ok(a), Ok(b)) => crate::object::human_seconds((b - a).num_seconds()),
                _ => String::new(),
            },
            _ => String::new(),
        };
        out.extend([
            json!(status),
            json!(match completions {
                Some(c) => format!("{done}/{c}"),
                None => match i(o, "/spec/parallelism") {
                    p if p > 1 => format!("{done}/1 of {p}"),
                    _ => format!("{done}/1"),
                },
            }),
            json!(duration),
            age(o),
            json!(cnames),
            json!(images),
            sel,
        ]);
        Some(out)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["status.successful"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_completions(job: Value) -> (Value, Value) {
        let cells = Job.cells(&job).expect("cells");
        (cells[1].clone(), cells[2].clone())
    }

    #[test]
    fn jobs_print_as_upstreams_print_job() {
        let one = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 1}, "status": {}});
        assert_eq!(
            status_and_completions(one),
            (json!("Running"), json!("0/1"))
        );
        let wide = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 3},
            "status": {"succeeded": 1}});
        assert_eq!(status_and_completions(wide).1, json!("1/1 of 3"));
        let deleted = json!({"metadata": {"name": "j", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"completions": 2}, "status": {"conditions": [
                {"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(
            status_and_completions(deleted),
            (json!("Terminating"), json!("0/2"))
        );
        let failing = json!({"metadata": {"name": "j"}, "spec": {"completions": 2},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(status_and_completions(failing).0, json!("FailureTarget"));
        // Suspension is what the controller reports, not the spec's wish.
        let asked = json!({"metadata": {"name": "j"}, "spec": {"completions": 1, "suspend": true},
            "status": {}});
        assert_eq!(status_and_completions(asked).0, json!("Running"));
    }
}
