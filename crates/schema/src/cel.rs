//! `x-kubernetes-validations`: CEL rules compiled once per CRD version with the Kubernetes
//! CEL libraries (kube-cel), checked for cost when the CRD is submitted, run on each write.

use kube_cel::{
    analyze_rule, compile_schema, CompiledSchema, RootContext, ScopeContext, Validator, WarningKind,
};
use serde_json::Value;

use crate::path::FieldPath;
use crate::validate::{Violation, ViolationKind};

/// One CRD version's rules, ready to evaluate.
pub struct CelRules {
    compiled: CompiledSchema,
    validator: Validator,
    root: RootContext,
}

impl std::fmt::Debug for CelRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelRules")
    }
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => {
            o.get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
                || o.values().any(has_rules)
        }
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        Some(Value::Object(_)) => "object",
        Some(Value::Array(_)) => "array",
        Some(Value::String(_)) => "string",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
        Some(Value::Number(_)) => "number",
        _ => "null",
    }
}

/// The value at a dotted path like `spec.items[2].name`, for the "Invalid value" part.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx)?,
            };
        }
    }
    Some(cur)
}

impl CelRules {
    /// `None` when the schema has no rules (nothing to run per request).
    pub fn compile(schema: &Value, group: &str, version: &str, kind: &str) -> Option<CelRules> {
        if !has_rules(schema) {
            return None;
        }
        Some(CelRules {
            compiled: compile_schema(schema),
            validator: Validator::new(),
            root: RootContext {
                api_version: format!("{group}/{version}"),
                api_group: group.to_string(),
                kind: kind.to_string(),
            },
        })
    }

    /// Every failed rule, as a cause naming its field (transition rules see `old`).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Violation> {
        let Err(errors) = self.validator.validate_compiled_with_context(
            &self.compiled,
            obj,
            old,
            Some(&self.root),
        ) else {
            return Vec::new();
        };
        errors
            .into_vec()
            .into_iter()
            .map(|e| {
                let kind = match e.reason.as_deref() {
                    Some("FieldValueForbidden") => ViolationKind::Forbidden,
                    Some("FieldValueRequired") => ViolationKind::Required,
                    Some("FieldValueDuplicate") => ViolationKind::Duplicate,
                    _ => ViolationKind::Invalid,
                };
                let value = Value::from(type_name(lookup(obj, &e.field_path)));
                Violation {
                    field: e.field_path.clone(),
                    kind,
                    value: (kind == ViolationKind::Invalid || kind == ViolationKind::Duplicate)
                        .then_some(value),
                    detail: e.message,
                }
            })
            .collect()
    }
}

/// Why a CEL expression does not parse, if it does not (ValidatingAdmissionPolicy
/// expressions, checked when the policy is written).
pub fn cel_compile_error(expr: &str) -> Option<String> {
    kube_cel::cel::Program::compile(expr)
        .err()
        .map(|e| e.to_string())
}

/// Names a CRD validation rule may use without binding them.
const DECLARED: [&str; 14] = [
    "self",
    "oldSelf",
    // Type denotations, usable as values (`type(self) == string`).
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "duration",
    "timestamp",
];

/// The first variable a rule uses that is neither declared for CRD rules nor bound by an
/// enclosing comprehension (`all`, `exists`, `map`, `filter` …).
fn unknown_variable(rule: &str) -> Option<String> {
    use kube_cel::cel::common::ast::{EntryExpr, Expr};
    fn walk(e: &Expr, bound: &mut Vec<String>) -> Option<String> {
        match e {
            Expr::Ident(name) => (!bound.iter().any(|b| b == name)
                && !DECLARED.contains(&name.as_str()))
            .then(|| name.clone()),
            Expr::Call(c) => c
                .target
                .iter()
                .map(|t| &t.expr)
                .chain(c.args.iter().map(|a| &a.expr))
                .find_map(|x| walk(x, bound)),
            Expr::Select(sel) => walk(&sel.operand.expr, bound),
            Expr::List(l) => l.elements.iter().find_map(|x| walk(&x.expr, bound)),
            Expr::Map(m) => m.entries.iter().find_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => {
                    walk(&me.key.expr, bound).or_else(|| walk(&me.value.expr, bound))
                }
                EntryExpr::StructField(f) => walk(&f.value.expr, bound),
            }),
            Expr::Struct(st) => st.entries.iter().find_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => walk(&me.value.expr, bound),
                EntryExpr::StructField(f) => walk(&f.value.expr, bound),
            }),
            Expr::Comprehension(c) => {
                if let Some(v) =
                    walk(&c.iter_range.expr, bound).or_else(|| walk(&c.accu_init.expr, bound))
                {
                    return Some(v);
                }
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                let found = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .find_map(|x| walk(&x.expr, bound));
                bound.truncate(depth);
                found
            }
            Expr::Literal(_) | Expr::Unspecified => None,
        }
    }
    let program = kube_cel::cel::Program::compile(rule).ok()?;
    walk(&program.expression().expr, &mut Vec::new())
}

/// Problems with the rules of a CRD version's schema, found when the CRD is submitted:
/// rules that do not compile, name unknown variables, or could cost more than upstream's
/// budget per call (so no rule can tie up the server at run time).
pub fn check_rules(schema: &Value, path: &FieldPath) -> Vec<Violation> {
    let mut out = Vec::new();
    walk(schema, path, &mut out);
    out
}

fn walk(node: &Value, path: &FieldPath, out: &mut Vec<Violation>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(rules) = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        let compiled = compile_schema(node);
        for (i, r) in rules.iter().enumerate() {
            let rp = path.child("x-kubernetes-validations").index(i);
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                out.push(Violation {
                    field: rp.child("rule").to_string(),
                    kind: ViolationKind::Required,
                    value: None,
                    detail: String::new(),
                });
                continue;
            };
            if let Err(e) = kube_cel::cel::Program::compile(rule) {
                out.push(Violation {
                    field: rp.child("rule").to_string(),
                    kind: ViolationKind::Invalid,
                    value: Some(Value::from(rule)),
                    detail: format!("compilation failed: {e}"),
                });
                continue;
            }
            if let Some(me) = r.get("messageExpression").and_then(Value::as_str) {
                if let Err(e) = kube_cel::cel::Program::compile(me) {
                    out.push(Violation {
                        field: rp.child("messageExpression").to_string(),
                        kind: ViolationKind::Invalid,
                        value: Some(Value::from(me)),
                        detail: format!("messageExpression compilation failed: {e}"),
                    });
                }
            }
            if let Some(unknown) = unknown_variable(rule) {
                out.push(Violation {
                    field: rp.child("rule").to_string(),
                    kind: ViolationKind::Invalid,
                    value: Some(Value::from(rule)),
                    detail: format!("compilation failed: ERROR: <input>:1:1: undeclared reference to '{unknown}' (in container '')"),
                });
            }
            // kube-cel's scope check counts comprehension variables (`x` in
            // `self.all(x, …)`) as unknown; ours above binds them, so only its cost
            // findings are used.
            for w in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
                if w.kind == WarningKind::CostExceeded {
                    out.push(Violation {
                        field: rp.child("rule").to_string(),
                        kind: ViolationKind::Forbidden,
                        value: None,
                        detail: format!("{} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)", w.message),
                    });
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, &path.child("properties").key(k), out);
        }
    }
    if let Some(items) = obj.get("items") {
        walk(items, &path.child("items"), out);
    }
    if let Some(a) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        walk(a, &path.child("additionalProperties"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.replicas", "message": "replicas should be greater than or equal to minReplicas"},
            {"rule": "self.replicas <= 10", "messageExpression": "'replicas ' + string(self.replicas) + ' is too many'", "fieldPath": ".replicas"}
        ],
        "properties": {
            "replicas": {"type": "integer"},
            "minReplicas": {"type": "integer"},
            "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable", "reason": "FieldValueForbidden"}]},
            "host": {"type": "string", "maxLength": 253, "x-kubernetes-validations": [{"rule": "isURL('https://' + self)"}]},
            "cpu": {"type": "string", "x-kubernetes-validations": [{"rule": "quantity(self).isLessThan(quantity('2'))", "message": "at most 2 CPUs"}]}
        }}}})
    }

    #[test]
    fn rules_run_with_kubernetes_libraries_and_transition_rules() {
        let rules = CelRules::compile(&schema(), "example.com", "v1", "Widget").unwrap();
        let ok = json!({"spec": {"replicas": 3, "minReplicas": 1, "name": "a", "host": "example.com", "cpu": "500m"}});
        assert!(
            rules.validate(&ok, None).is_empty(),
            "{:?}",
            rules.validate(&ok, None)
        );
        let bad = json!({"spec": {"replicas": 12, "minReplicas": 13, "name": "b", "cpu": "4"}});
        let got: Vec<(String, String)> = rules
            .validate(&bad, Some(&ok))
            .into_iter()
            .map(|v| (v.field.clone(), v.message()))
            .collect();
        for (f, m) in [
            ("spec", "Invalid value: \"object\": replicas should be greater than or equal to minReplicas"),
            ("spec.replicas", "Invalid value: \"integer\": replicas 12 is too many"),
            ("spec.name", "Forbidden: name is immutable"),
            ("spec.cpu", "Invalid value: \"string\": at most 2 CPUs"),
        ] {
            assert!(got.contains(&(f.to_string(), m.to_string())), "missing {f}: {m} in {got:#?}");
        }
        assert!(CelRules::compile(&json!({"type": "object"}), "g", "v", "K").is_none());
    }

    #[test]
    fn comprehension_variables_are_bound_and_strangers_are_not() {
        for ok in [
            "self.all(x, x.size() < 10)",
            "self.exists(x, self.all(y, y != x))",
            "self.map(x, x + 'a').filter(y, y.startsWith('b')).size() >= 0",
            "self.exists_one(x, x == 'a') || type(self) == list",
        ] {
            assert_eq!(unknown_variable(ok), None, "{ok}");
        }
        assert_eq!(
            unknown_variable("self.all(x, x == y)").as_deref(),
            Some("y")
        );
        assert_eq!(unknown_variable("spec.size() > 0").as_deref(), Some("spec"));
        // The comprehension variable is not visible after it.
        assert_eq!(
            unknown_variable("self.all(x, x != '') && x == 'a'").as_deref(),
            Some("x")
        );
        let schema = json!({"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10},
            "x-kubernetes-validations": [{"rule": "self.all(x, x.size() < 10)"}, {"rule": "self.all(x, x == y)"}]});
        let got = check_rules(&schema, &FieldPath::root("s"));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].detail.contains("undeclared reference to 'y'"),
            "{got:#?}"
        );
    }

    #[test]
    fn bad_and_costly_rules_are_refused_up_front() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "a": {"type": "string", "x-kubernetes-validations": [{"rule": "self ==="}]},
            "list": {"type": "array", "items": {"type": "array", "items": {"type": "string"}},
                     "x-kubernetes-validations": [{"rule": "self.all(x, x.all(y, self.all(z, z.all(w, w == y))))"}]}
        }}}});
        let got = check_rules(
            &s,
            &FieldPath::root("spec.versions[0].schema.openAPIV3Schema"),
        );
        let fields: Vec<&str> = got.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[a].x-kubernetes-validations[0].rule"), "{got:#?}");
        assert!(got.iter().any(|v| v.kind == ViolationKind::Forbidden && v.field.contains("properties[list]")), "{got:#?}");
    }
}
