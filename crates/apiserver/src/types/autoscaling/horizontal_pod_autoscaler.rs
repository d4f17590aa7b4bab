//! HorizontalPodAutoscaler (autoscaling, autoscaling/v1, autoscaling/v2): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct HorizontalPodAutoscaler;

impl Strategy for HorizontalPodAutoscaler {
    fn defaults(&self, obj: &mut Value, _creating: bool) {
        use crate::types::shared::defaulting::*;
        let spec = child(obj, "spec");
        default(spec, "minReplicas", json!(1));
        let v2 = obj.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v2");
        if v2 {
            let spec = child(obj, "spec");
            default(
                spec,
                "metrics",
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for f in ["kind", "name"] {
            if s(obj, &format!("/spec/scaleTargetRef/{f}")).is_empty() {
                c.required(&format!("spec.scaleTargetRef.{f}"), "");
            }
        }
        let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64);
        let min = obj
            .pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        match max {
            None => c.required("spec.maxReplicas", ""),
            Some(m) if m < 1 => c.invalid(
                "spec.maxReplicas",
                &json!(m),
                "must be greater than or equal to 1",
            ),
            Some(m) if m < min => c.invalid(
                "spec.maxReplicas",
                &json!(m),
                "must be greater than or equal to `minReplicas`",
            ),
            _ => {}
        }
        if min < 1 {
            c.invalid(
                "spec.minReplicas",
                &json!(min),
                "must be greater than or equal to 1",
            );
        }
        for (i, m) in arr(obj, "/spec/metrics").iter().enumerate() {
            c.one_of(
                m,
                "/type",
                &format!("spec.metrics[{i}].type"),
                &[
                    "Object",
                    "Pods",
                    "Resource",
                    "External",
                    "ContainerResource",
                ],
                true,
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
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let target = format!(
            "{}/{}",
            s(o, "/spec/scaleTargetRef/kind"),
            s(o, "/spec/scaleTargetRef/name")
        );
        out.extend([
            json!(target),
            json!("<unknown>"),
            json!(o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string()),
            json!(i(o, "/spec/maxReplicas")),
            json!(i(o, "/status/currentReplicas")),
            age(o),
        ]);
        Some(out)
    }
}
