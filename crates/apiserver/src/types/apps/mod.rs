//! The apps API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod controller_revision;
pub mod daemon_set;
pub mod deployment;
pub mod replica_set;
pub mod stateful_set;

use crate::types::shared::validating::Causes;
use serde_json::{json, Value};

pub(crate) fn workload_validation(c: &mut Causes, _group: &str, kind: &str, obj: &Value) {
    use crate::types::shared::validating::*;
    if kind != "ReplicationController" {
        selector_matches_template(c, obj, &kind.to_lowercase());
    } else if let Some(sel) = obj.pointer("/spec/selector").and_then(Value::as_object) {
        // (Defaulting copied the template's labels into an absent selector.)
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        if obj.pointer("/spec/template").is_some()
            && !sel
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            c.invalid(
                "spec.template.metadata.labels",
                &json!(labels.cloned().unwrap_or_default()),
                "`selector` does not match template `labels`",
            );
        }
    }
    c.non_negative(obj, "/spec/replicas", "spec.replicas");
    c.non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds");
    c.non_negative(
        obj,
        "/spec/revisionHistoryLimit",
        "spec.revisionHistoryLimit",
    );
    let claims: Vec<&str> = arr(obj, "/spec/volumeClaimTemplates")
        .iter()
        .map(|t| s(t, "/metadata/name"))
        .collect();
    match obj.pointer("/spec/template/spec") {
        Some(spec) => pod_spec_with(c, spec, "spec.template.spec", &claims),
        None if kind != "ReplicationController" => c.required("spec.template", ""),
        None => {}
    }
    template_restart(
        c,
        obj,
        "/spec/template/spec/restartPolicy",
        "spec.template.spec.restartPolicy",
        &["Always"],
    );
    if kind == "Deployment" {
        c.one_of(
            obj,
            "/spec/strategy/type",
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
            false,
        );
        if s(obj, "/spec/strategy/type") == "Recreate"
            && obj.pointer("/spec/strategy/rollingUpdate").is_some()
        {
            c.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            );
        }
        for f in ["maxUnavailable", "maxSurge"] {
            if let Some(v) = obj.pointer(&format!("/spec/strategy/rollingUpdate/{f}")) {
                if let Some(msg) = intstr_percent_ok(v, f == "maxUnavailable") {
                    c.invalid(&format!("spec.strategy.rollingUpdate.{f}"), v, &msg);
                }
            }
        }
        let zero = |v: Option<&Value>| {
            matches!(v, Some(Value::Number(n)) if n.as_i64() == Some(0))
                || matches!(v, Some(Value::String(p)) if p == "0%")
        };
        if zero(obj.pointer("/spec/strategy/rollingUpdate/maxUnavailable"))
            && zero(obj.pointer("/spec/strategy/rollingUpdate/maxSurge"))
        {
            c.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &json!(0),
                "may not be 0 when `maxSurge` is 0",
            );
        }
        if let (Some(pd), Some(mr)) = (
            obj.pointer("/spec/progressDeadlineSeconds")
                .and_then(Value::as_i64),
            obj.pointer("/spec/minReadySeconds").and_then(Value::as_i64),
        ) {
            if pd <= mr {
                c.invalid(
                    "spec.progressDeadlineSeconds",
                    &json!(pd),
                    "must be greater than minReadySeconds",
                );
            }
        }
    }
    if kind == "StatefulSet" {
        c.one_of(
            obj,
            "/spec/podManagementPolicy",
            "spec.podManagementPolicy",
            &["OrderedReady", "Parallel"],
            false,
        );
        c.one_of(
            obj,
            "/spec/updateStrategy/type",
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
            false,
        );
    }
    if kind == "DaemonSet" {
        c.one_of(
            obj,
            "/spec/updateStrategy/type",
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
            false,
        );
    }
}

pub(crate) fn workload_selector_immutable(
    c: &mut Causes,
    _group: &str,
    _kind: &str,
    old: &Value,
    new: &Value,
) {
    use crate::types::shared::validating::*;
    let immutable = |c: &mut Causes, ptr: &str, field: &str| {
        if old.pointer(ptr) != new.pointer(ptr) {
            c.invalid(
                field,
                new.pointer(ptr).unwrap_or(&Value::Null),
                "field is immutable",
            );
        }
    };
    immutable(c, "/spec/selector", "spec.selector")
}

pub(crate) fn replica_set_columns() -> Option<Vec<Value>> {
    use crate::types::shared::printing::*;
    let c =
        |spec: &[(&str, &str, i64)]| Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect());
    c(&[
        ("Name", "string", 0),
        ("Desired", "integer", 0),
        ("Current", "integer", 0),
        ("Ready", "integer", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ])
}

pub(crate) fn replica_set_cells(o: &Value, out: &mut Vec<Value>) -> Option<()> {
    use crate::types::shared::printing::*;
    let tpl = o
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    let (cnames, images) = containers(&tpl);
    let sel = or_none(selector(o.pointer("/spec/selector")));
    out.extend([
        json!(i(o, "/spec/replicas")),
        json!(i(o, "/status/replicas")),
        json!(i(o, "/status/readyReplicas")),
        age(o),
        json!(cnames),
        json!(images),
        sel,
    ]);
    Some(())
}
