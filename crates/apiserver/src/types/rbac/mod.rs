//! The rbac.authorization.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod cluster_role;
pub mod cluster_role_binding;
pub mod role;
pub mod role_binding;

use crate::types::shared::validating::Causes;
use serde_json::{json, Value};

pub(crate) fn role_binding_defaults(_group: &str, _kind: &str, obj: &mut Value, _creating: bool) {
    use crate::types::shared::defaulting::*;
    each(obj, "subjects", |s| {
        let group = match s.get("kind").and_then(Value::as_str) {
            Some("User") | Some("Group") => "rbac.authorization.k8s.io",
            _ => "",
        };
        default(s, "apiGroup", json!(group));
    })
}

pub(crate) fn role_validation(c: &mut Causes, _group: &str, _kind: &str, obj: &Value) {
    use crate::types::shared::validating::*;
    for (i, r) in arr(obj, "/rules").iter().enumerate() {
        if arr(r, "/verbs").is_empty() {
            c.required(
                &format!("rules[{i}].verbs"),
                "verbs must contain at least one value",
            );
        }
        if !arr(r, "/resources").is_empty() && r.get("apiGroups").is_none() {
            c.required(
                &format!("rules[{i}].apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
    }
}

pub(crate) fn role_binding_validation(c: &mut Causes, _group: &str, kind: &str, obj: &Value) {
    use crate::types::shared::validating::*;
    let allowed: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    c.one_of(obj, "/roleRef/kind", "roleRef.kind", allowed, true);
    let role = s(obj, "/roleRef/name");
    if role.is_empty() {
        c.required("roleRef.name", "");
    }
    // ValidateRBACName: a role's name is only held to the path-segment rule.
    for m in crate::types::validation::path_segment_errors(role) {
        c.0.push(Cause::invalid("roleRef.name", role, &m));
    }
    for (i, sub) in arr(obj, "/subjects").iter().enumerate() {
        c.one_of(
            sub,
            "/kind",
            &format!("subjects[{i}].kind"),
            &["ServiceAccount", "User", "Group"],
            true,
        );
        if s(sub, "/name").is_empty() {
            c.required(&format!("subjects[{i}].name"), "");
        }
        if s(sub, "/kind") == "ServiceAccount"
            && kind == "ClusterRoleBinding"
            && s(sub, "/namespace").is_empty()
        {
            c.required(&format!("subjects[{i}].namespace"), "");
        }
    }
}

pub(crate) fn role_ref_immutable(
    c: &mut Causes,
    _group: &str,
    _kind: &str,
    old: &Value,
    new: &Value,
) {
    if old.get("roleRef") != new.get("roleRef") {
        c.invalid(
            "roleRef",
            new.get("roleRef").unwrap_or(&Value::Null),
            "cannot change roleRef",
        );
    }
}

pub(crate) fn role_binding_columns() -> Option<Vec<Value>> {
    use crate::types::shared::printing::*;
    let c =
        |spec: &[(&str, &str, i64)]| Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect());
    c(&[
        ("Name", "string", 0),
        ("Role", "string", 0),
        ("Age", "string", 0),
        ("Users", "string", 1),
        ("Groups", "string", 1),
        ("ServiceAccounts", "string", 1),
    ])
}

pub(crate) fn role_binding_cells(o: &Value, out: &mut Vec<Value>) -> Option<()> {
    use crate::types::shared::printing::*;

    let subjects = arr(o, "/subjects");
    let of = |kind: &str| -> Vec<String> {
        subjects
            .iter()
            .filter(|x| s(x, "/kind") == kind)
            .map(|x| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                } else {
                    s(x, "/name").to_string()
                }
            })
            .collect()
    };
    out.extend([
        json!(format!(
            "{}/{}",
            s(o, "/roleRef/kind"),
            s(o, "/roleRef/name")
        )),
        age(o),
        json!(of("User").join(", ")),
        json!(of("Group").join(", ")),
        json!(of("ServiceAccount").join(", ")),
    ]);
    Some(())
}
