//! One request's policy evaluation, on a CEL thread: per (policy, binding, param) its match
//! conditions, variables, validations and audit annotations, turned into decisions.

use std::sync::Arc;

use capstan_schema::{Activation, Outcome};
use serde_json::Value;

use super::compiled::{Actions, Binding, Compiled, Policy};

/// One policy-binding pair to evaluate with one param object (Null when it has none).
pub struct Pair {
    pub policy: Arc<Policy>,
    pub binding: Arc<Binding>,
    pub params: Value,
}

/// What the request binds for every expression.
pub struct Request {
    pub object: Value,
    pub old_object: Value,
    pub request: Value,
    pub namespace_object: Value,
}

/// A failed validation (or an error treated as one by failurePolicy Fail).
#[derive(Debug, Clone)]
pub struct Decision {
    pub policy: String,
    pub binding: String,
    pub actions: Actions,
    pub message: String,
    pub reason: &'static str,
    /// Which validation failed; None for errors outside the validations.
    pub expression_index: Option<usize>,
}

#[derive(Default)]
pub struct Verdicts {
    pub decisions: Vec<Decision>,
    /// `<policy name>/<key>` → value, for the audit event.
    pub annotations: Vec<(String, String)>,
}

pub fn run(req: &Request, pairs: &[Pair]) -> Verdicts {
    let mut out = Verdicts::default();
    for pair in pairs {
        evaluate(req, pair, &mut out);
    }
    out
}

fn evaluate(req: &Request, pair: &Pair, out: &mut Verdicts) {
    let p = &pair.policy;
    let decide = |out: &mut Verdicts, message: String, reason, index| {
        out.decisions.push(Decision {
            policy: p.name.clone(),
            binding: pair.binding.name.clone(),
            actions: pair.binding.actions,
            message,
            reason,
            expression_index: index,
        })
    };
    let mut act = Activation::new();
    act.bind("object", &req.object);
    act.bind("oldObject", &req.old_object);
    act.bind("request", &req.request);
    act.bind("namespaceObject", &req.namespace_object);
    act.bind("params", &pair.params);
    let eval = |act: &Activation, c: &Compiled| match c {
        Ok(e) => act.eval(e),
        Err(e) => Err(e.clone()),
    };
    for (name, cond) in &p.match_conditions {
        match eval(&act, cond) {
            Ok(Outcome::Bool(true)) => {}
            Ok(Outcome::Bool(false)) => return,
            other => {
                if p.fail_closed {
                    let why = match other {
                        Err(e) => e,
                        Ok(o) => format!("must evaluate to bool, got {o:?}"),
                    };
                    decide(
                        out,
                        format!("failed to evaluate match condition {name:?}: {why}"),
                        "Invalid",
                        None,
                    );
                }
                return;
            }
        }
    }
    for (name, var) in &p.variables {
        if let Ok(e) = var {
            // A variable that fails stays unbound: only expressions that use it fail.
            let _ = act.bind_variable(name, e);
        }
    }
    for (i, v) in p.validations.iter().enumerate() {
        match eval(&act, &v.expression) {
            Ok(Outcome::Bool(true)) => {}
            Ok(Outcome::Bool(false)) => {
                let from_expression =
                    v.message_expression
                        .as_ref()
                        .and_then(|m| match eval(&act, m) {
                            Ok(Outcome::String(s)) if !s.trim().is_empty() => Some(s),
                            _ => None,
                        });
                let message = from_expression.unwrap_or_else(|| {
                    if v.message.is_empty() {
                        format!("failed expression: {}", v.text)
                    } else {
                        v.message.clone()
                    }
                });
                decide(out, message, v.reason, Some(i));
            }
            other if p.fail_closed => {
                let why = match other {
                    Err(e) => e,
                    Ok(o) => format!("must evaluate to bool, got {o:?}"),
                };
                decide(
                    out,
                    format!("expression '{}' resulted in error: {why}", v.text),
                    "Invalid",
                    Some(i),
                );
            }
            _ => {}
        }
    }
    for (key, a) in &p.audit_annotations {
        if let Ok(Outcome::String(s)) = eval(&act, a) {
            out.annotations.push((format!("{}/{key}", p.name), s));
        }
    }
}
