//! Policies and bindings as the plugin keeps them: read once from their stored JSON when
//! they change, expressions compiled then (a bad one fails its requests per failurePolicy).

use std::sync::Arc;

use capstan_schema::Expression;
use serde_json::Value;

use super::matching::Match;

/// An expression, or why it did not compile (reported when the policy is used).
pub type Compiled = Result<Expression, String>;

fn compile(text: &str) -> Compiled {
    Expression::compile(text).map_err(|e| format!("compilation failed: {e}"))
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, p: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(p).and_then(Value::as_array).into_iter().flatten()
}

pub struct Validation {
    pub expression: Compiled,
    pub text: String,
    pub message: String,
    pub message_expression: Option<Compiled>,
    /// `Invalid` unless the validation names another reason.
    pub reason: &'static str,
}

pub struct Policy {
    pub name: String,
    /// failurePolicy Fail (the default) rather than Ignore.
    pub fail_closed: bool,
    pub constraints: Match,
    /// `paramKind` as (apiVersion, kind).
    pub param_kind: Option<(String, String)>,
    pub match_conditions: Vec<(String, Compiled)>,
    pub variables: Vec<(String, Compiled)>,
    pub validations: Vec<Validation>,
    pub audit_annotations: Vec<(String, Compiled)>,
}

/// upstream's four validation reasons, as the `Status` reason strings they become.
fn reason(v: &str) -> &'static str {
    match v {
        "Unauthorized" => "Unauthorized",
        "Forbidden" => "Forbidden",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        _ => "Invalid",
    }
}

impl Policy {
    pub fn from_json(obj: &Value) -> Policy {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let named = |list: &str, field: &str| -> Vec<(String, Compiled)> {
            items(spec, list)
                .map(|v| {
                    (
                        s(v, &format!("/{field}")).to_string(),
                        compile(s(v, "/expression")),
                    )
                })
                .collect()
        };
        Policy {
            name: s(obj, "/metadata/name").to_string(),
            fail_closed: s(spec, "/failurePolicy") != "Ignore",
            constraints: Match::from_json(spec.get("matchConstraints")),
            param_kind: spec
                .get("paramKind")
                .filter(|p| p.is_object())
                .map(|p| (s(p, "/apiVersion").to_string(), s(p, "/kind").to_string())),
            match_conditions: named("/matchConditions", "name"),
            variables: named("/variables", "name"),
            validations: items(spec, "/validations")
                .map(|v| Validation {
                    expression: compile(s(v, "/expression")),
                    text: s(v, "/expression").trim().to_string(),
                    message: s(v, "/message").to_string(),
                    message_expression: Some(s(v, "/messageExpression"))
                        .filter(|m| !m.is_empty())
                        .map(compile),
                    reason: reason(s(v, "/reason")),
                })
                .collect(),
            audit_annotations: items(spec, "/auditAnnotations")
                .map(|v| (s(v, "/key").to_string(), compile(s(v, "/valueExpression"))))
                .collect(),
        }
    }
}

/// What a binding's `paramRef` asks for.
pub struct ParamRef {
    pub name: String,
    pub namespace: String,
    pub selector: Option<Value>,
    /// parameterNotFoundAction Deny (rather than Allow).
    pub deny_if_missing: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub deny: bool,
    pub warn: bool,
    pub audit: bool,
}

impl Actions {
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.deny, "Deny"),
            (self.warn, "Warn"),
            (self.audit, "Audit"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

pub struct Binding {
    pub name: String,
    pub policy_name: String,
    pub param_ref: Option<ParamRef>,
    /// None: every request the policy matches.
    pub matches: Option<Match>,
    pub actions: Actions,
}

impl Binding {
    pub fn from_json(obj: &Value) -> Binding {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let mut actions = Actions::default();
        for a in items(spec, "/validationActions").filter_map(Value::as_str) {
            match a {
                "Deny" => actions.deny = true,
                "Warn" => actions.warn = true,
                "Audit" => actions.audit = true,
                _ => {}
            }
        }
        Binding {
            name: s(obj, "/metadata/name").to_string(),
            policy_name: s(spec, "/policyName").to_string(),
            param_ref: spec
                .get("paramRef")
                .filter(|p| p.is_object())
                .map(|p| ParamRef {
                    name: s(p, "/name").to_string(),
                    namespace: s(p, "/namespace").to_string(),
                    selector: p.get("selector").filter(|x| x.is_object()).cloned(),
                    deny_if_missing: s(p, "/parameterNotFoundAction") == "Deny",
                }),
            matches: spec
                .get("matchResources")
                .filter(|m| m.is_object())
                .map(|m| Match::from_json(Some(m))),
            actions,
        }
    }
}

/// Every policy with the bindings that name it, as one request sees them.
#[derive(Default)]
pub struct Snapshot {
    pub pairs: Vec<(Arc<Policy>, Arc<Binding>)>,
}
