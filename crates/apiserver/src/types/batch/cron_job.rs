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
        } else {
            // validateScheduleFormat: the parser's complaint, then any TZ in the schedule.
            if let Some(e) = super::cron_schedule::parse_error(sched) {
                c.invalid("spec.schedule", &json!(sched), &e);
            }
            if sched.contains("TZ") {
                c.invalid(
                    "spec.schedule",
                    &json!(sched),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                );
            }
        }
        if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str) {
            time_zone(&mut c, tz);
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

/// validateTimeZone: an explicit IANA zone name the zone database knows.
fn time_zone(c: &mut crate::types::shared::validating::Causes, tz: &str) {
    let f = "spec.timeZone";
    if tz.is_empty() {
        c.invalid(f, &json!(tz), "timeZone must be nil or non-empty string");
        return;
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ".-_+".contains(ch))
    };
    if !tz.split('/').all(part_ok) {
        c.invalid(f, &json!(tz), &format!("unknown time zone {tz}"));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        c.invalid(
            f,
            &json!(tz),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        );
        // Go's LoadLocation("Local") succeeds; other spellings are unknown names.
        if tz == "Local" {
            return;
        }
    }
    if tz != "UTC" && tz.parse::<chrono_tz::Tz>().is_err() {
        c.invalid(f, &json!(tz), &format!("unknown time zone {tz}"));
    }
}
