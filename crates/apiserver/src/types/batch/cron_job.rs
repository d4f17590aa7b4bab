//! CronJob (batch, batch/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct CronJob;

impl Strategy for CronJob {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "concurrencyPolicy", json!("Allow"));
        default(spec, "suspend", json!(false));
        default(spec, "successfulJobsHistoryLimit", json!(3));
        default(spec, "failedJobsHistoryLimit", json!(1));
        template(obj, "/spec/jobTemplate/spec/template/spec");
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        // Its Jobs are named `<name>-<minutes since epoch>`, which must stay a label.
        let name = s(obj, "/metadata/name");
        if name.len() > 52 {
            c.invalid(
                "metadata.name",
                &json!(name),
                "must be no more than 52 characters",
            );
        }
        let sched = s(obj, "/spec/schedule");
        if sched.is_empty() {
            c.required("spec.schedule", "");
        } else if sched.starts_with("TZ=") || sched.starts_with("CRON_TZ=") {
            c.invalid(
                "spec.schedule",
                &json!(sched),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            );
        } else if !cron_ok(sched) {
            c.invalid(
                "spec.schedule",
                &json!(sched),
                "unparseable cron expression",
            );
        }
        c.one_of(
            obj,
            "/spec/concurrencyPolicy",
            "spec.concurrencyPolicy",
            &["Allow", "Forbid", "Replace"],
            false,
        );
        c.non_negative(
            obj,
            "/spec/successfulJobsHistoryLimit",
            "spec.successfulJobsHistoryLimit",
        );
        c.non_negative(
            obj,
            "/spec/failedJobsHistoryLimit",
            "spec.failedJobsHistoryLimit",
        );
        job(
            &mut c,
            obj,
            "spec.jobTemplate.spec",
            "/spec/jobTemplate/spec",
        );
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let jt = o
            .pointer("/spec/jobTemplate/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        let (n, im) = containers(&jt);
        let last = s(o, "/status/lastScheduleTime");
        out.extend([
            json!(s(o, "/spec/schedule")),
            or_none(s(o, "/spec/timeZone").to_string()),
            json!(o.pointer("/spec/suspend") == Some(&json!(true))),
            json!(arr(o, "/status/active").len()),
            json!(if last.is_empty() {
                "<none>".to_string()
            } else {
                duration_since(last)
            }),
            age(o),
            json!(n),
            json!(im),
            or_none(selector(o.pointer("/spec/jobTemplate/spec/selector"))),
        ]);
        Some(out)
    }
}
