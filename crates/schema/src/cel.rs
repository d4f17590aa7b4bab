//! `x-kubernetes-validations`: CEL rules compiled once per CRD version with the Kubernetes
//! CEL libraries (kube-cel), checked for cost when the CRD is submitted, run on each write.

use kube_cel::{compile_schema, CompiledSchema, RootContext, Validator};
use serde_json::Value;

use crate::path::FieldPath;
use crate::validate::{Violation, ViolationKind};

/// One CRD version's rules, ready to evaluate.
pub struct CelRules {
    compiled: CompiledSchema,
    validator: &'static Validator,
    root: RootContext,
}

/// One evaluator for every rule set: it holds only the registered CEL functions, and one
/// per CRD version cost about a megabyte each.
fn validator() -> &'static Validator {
    static VALIDATOR: std::sync::OnceLock<Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(Validator::new)
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
            validator: validator(),
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

/// Upstream's StaticEstimatedCostLimit: the largest static cost one expression may have
/// (its cost per call times how many times it can be called per object).
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Upstream's StaticEstimatedCRDCostLimit: the largest total over a version's schema.
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
/// Upstream sizes unbounded strings, lists and maps by what fits in a request (3 MiB).
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;

/// Upstream's getCostErrorMessage.
fn cost_error_message(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!("{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")
}

fn schema_type(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn bound(s: &Value, key: &str) -> Option<u64> {
    s.get(key).and_then(Value::as_u64)
}

/// The fewest bytes one value of this schema takes in JSON (how many fit in a request).
fn min_serialized_size(s: &Value) -> u64 {
    match schema_type(s) {
        "string" => 2 + bound(s, "minLength").unwrap_or(0),
        "object" | "array" => 2,
        _ => 1,
    }
}

/// How many items a list or map of this schema can hold.
fn max_elements(s: &Value) -> u64 {
    let (limit, item) = match schema_type(s) {
        "array" => (bound(s, "maxItems"), s.get("items")),
        "object" => (bound(s, "maxProperties"), s.get("additionalProperties")),
        "string" => {
            // Characters: upstream counts up to 4 bytes per code point of a bounded
            // string; an unbounded one is as long as a request.
            return bound(s, "maxLength")
                .map(|n| n.saturating_mul(4))
                .unwrap_or(MAX_REQUEST_BYTES);
        }
        _ => return 1,
    };
    limit.unwrap_or_else(|| {
        let each = item
            .filter(|i| i.is_object())
            .map_or(1, min_serialized_size)
            + 1;
        // A map entry also carries its key (`"":`).
        let each = if schema_type(s) == "object" {
            each + 3
        } else {
            each
        };
        MAX_REQUEST_BYTES / each
    })
}

/// The schema of `field` under `s`, or why `self.field` cannot compile: a field the
/// schema does not declare on an object that keeps no unknown fields is undefined.
fn field_schema<'a>(s: &'a Value, field: &str, root: bool) -> Result<Option<&'a Value>, ()> {
    if let Some(p) = s.get("properties").and_then(|p| p.get(field)) {
        return Ok(Some(p));
    }
    if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
        return Ok(Some(a));
    }
    let open = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || s.get("additionalProperties") == Some(&Value::Bool(true));
    // The object's own identity is declared for the root and embedded resources.
    let embedded = root || s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
    if open || (embedded && matches!(field, "apiVersion" | "kind" | "metadata")) {
        return Ok(None);
    }
    if schema_type(s) == "object" {
        return Err(());
    }
    Ok(None)
}

/// Functions whose cost grows with the length of the string (or list) they scan.
fn traverses(func: &str) -> bool {
    matches!(
        func,
        "contains"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "find"
            | "findAll"
            | "replace"
            | "split"
            | "indexOf"
            | "lastIndexOf"
            | "lowerAscii"
            | "upperAscii"
            | "trim"
            | "_==_"
            | "_!=_"
            | "_+_"
            | "@in"
    )
}

/// A static cost estimate of CEL expressions against a schema, shaped as cel-go's
/// estimator is: each node costs about one, scanning a string or list costs a tenth per
/// element, and a comprehension costs its body once per element the list can hold.
struct Estimator<'a> {
    /// The schema `self` and `oldSelf` stand for.
    root: &'a Value,
    root_is_object_root: bool,
    /// Variables bound by enclosing comprehensions, with their schemas.
    bound: Vec<(String, Option<&'a Value>)>,
    /// The first field the schema does not declare.
    undefined: Option<String>,
}

impl<'a> Estimator<'a> {
    fn est(&mut self, e: &kube_cel::cel::common::ast::Expr) -> (u64, Option<&'a Value>) {
        use kube_cel::cel::common::ast::{EntryExpr, Expr};
        match e {
            Expr::Ident(name) => {
                if let Some((_, s)) = self.bound.iter().rev().find(|(b, _)| b == name) {
                    return (1, *s);
                }
                match name.as_str() {
                    "self" | "oldSelf" => (1, Some(self.root)),
                    _ => (1, None),
                }
            }
            Expr::Literal(_) | Expr::Unspecified => (0, None),
            Expr::Select(sel) => {
                let is_root = matches!(&sel.operand.expr, Expr::Ident(n) if (n == "self" || n == "oldSelf") && self.root_is_object_root);
                let (c, s) = self.est(&sel.operand.expr);
                let child = match s {
                    Some(s) => match field_schema(s, &sel.field, is_root) {
                        Ok(child) => child,
                        Err(()) => {
                            self.undefined.get_or_insert_with(|| sel.field.clone());
                            None
                        }
                    },
                    None => None,
                };
                (c.saturating_add(1), if sel.test { None } else { child })
            }
            Expr::List(l) => {
                let c = l
                    .elements
                    .iter()
                    .fold(1u64, |acc, x| acc.saturating_add(self.est(&x.expr).0));
                (c, None)
            }
            Expr::Map(m) => {
                let mut c = 1u64;
                for en in &m.entries {
                    if let EntryExpr::MapEntry(me) = &en.expr {
                        c = c
                            .saturating_add(self.est(&me.key.expr).0)
                            .saturating_add(self.est(&me.value.expr).0);
                    }
                }
                (c, None)
            }
            Expr::Struct(st) => {
                let mut c = 1u64;
                for en in &st.entries {
                    match &en.expr {
                        EntryExpr::StructField(f) => {
                            c = c.saturating_add(self.est(&f.value.expr).0)
                        }
                        EntryExpr::MapEntry(me) => c = c.saturating_add(self.est(&me.value.expr).0),
                    }
                }
                (c, None)
            }
            Expr::Call(call) => {
                let mut c = 1u64;
                let mut scanned = 0u64;
                let mut first_schema = None;
                let operands = call
                    .target
                    .iter()
                    .map(|t| &t.expr)
                    .chain(call.args.iter().map(|a| &a.expr));
                for (i, x) in operands.enumerate() {
                    let (xc, xs) = self.est(x);
                    c = c.saturating_add(xc);
                    if i == 0 {
                        first_schema = xs;
                    }
                    if let Some(xs) = xs {
                        scanned = scanned.max(max_elements(xs));
                    }
                }
                if traverses(&call.func_name) {
                    c = c.saturating_add(scanned.div_ceil(10));
                }
                let result = match call.func_name.as_str() {
                    // Indexing a list or map gives its element.
                    "_[_]" => first_schema.and_then(|s| match schema_type(s) {
                        "array" => s.get("items"),
                        _ => s.get("additionalProperties").filter(|a| a.is_object()),
                    }),
                    _ => None,
                };
                (c, result)
            }
            Expr::Comprehension(comp) => {
                let (range_cost, range_schema) = self.est(&comp.iter_range.expr);
                let n = range_schema.map_or(1, max_elements);
                let element = range_schema.and_then(|s| match schema_type(s) {
                    "array" => s.get("items"),
                    _ => None,
                });
                let depth = self.bound.len();
                self.bound.push((comp.iter_var.clone(), element));
                if let Some(v2) = &comp.iter_var2 {
                    self.bound.push((v2.clone(), element));
                }
                self.bound.push((comp.accu_var.clone(), None));
                let init = self.est(&comp.accu_init.expr).0;
                let body = self
                    .est(&comp.loop_cond.expr)
                    .0
                    .saturating_add(self.est(&comp.loop_step.expr).0)
                    .max(1);
                let result = self.est(&comp.result.expr).0;
                self.bound.truncate(depth);
                (
                    range_cost
                        .saturating_add(init)
                        .saturating_add(n.saturating_mul(body))
                        .saturating_add(result),
                    None,
                )
            }
        }
    }
}

/// The estimated cost of one call of `rule` on a value of `schema` (`is_root`: the
/// schema is the object's root, which declares apiVersion, kind and metadata), and the
/// first field it selects that the schema does not declare.
fn estimate(rule: &str, schema: &Value, is_root: bool) -> Option<(u64, Option<String>)> {
    let program = kube_cel::cel::Program::compile(rule).ok()?;
    let mut e = Estimator {
        root: schema,
        root_is_object_root: is_root,
        bound: Vec::new(),
        undefined: None,
    };
    let (cost, _) = e.est(&program.expression().expr);
    Some((cost, e.undefined))
}

/// Where cel-go points for `.field` (1-based column of the dot), and its two snippet
/// lines, so the message reads as upstream's compiler writes it.
fn undefined_field_message(rule: &str, field: &str) -> String {
    let at = rule.find(&format!(".{field}")).unwrap_or(0);
    let (line_no, col, line) = {
        let before = &rule[..at];
        let line_no = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = rule[line_start..]
            .find('\n')
            .map_or(rule.len(), |i| line_start + i);
        (line_no, at - line_start + 1, &rule[line_start..line_end])
    };
    format!(
        "compilation failed: ERROR: <input>:{line_no}:{col}: undefined field '{field}'\n | {line}\n | {}^",
        ".".repeat(col - 1)
    )
}

/// The running total of a schema's rule costs and its most expensive contributors
/// (upstream's TotalCost: rules under 1% of the CRD limit are not named).
#[derive(Default)]
struct TotalCost {
    total: u64,
    most_expensive: Vec<(u64, String)>,
}

impl TotalCost {
    fn observe(&mut self, path: String, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT / 100 {
            return;
        }
        self.most_expensive.push((cost, path));
        self.most_expensive.sort_by_key(|e| std::cmp::Reverse(e.0));
        self.most_expensive.truncate(4);
    }
}

/// Problems with the rules of a CRD version's schema, found when the CRD is submitted:
/// rules that do not compile, name unknown variables or undeclared fields, or whose
/// estimated cost exceeds upstream's limits per expression (10,000,000) or for the whole
/// schema (100,000,000), so no rule can tie up the server at run time.
pub fn check_rules(schema: &Value, path: &FieldPath) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut total = TotalCost::default();
    walk(schema, path, 1, true, &mut total, &mut out);
    if total.total > STATIC_ESTIMATED_CRD_COST_LIMIT {
        for (_, p) in &total.most_expensive {
            out.push(Violation {
                field: p.clone(),
                kind: ViolationKind::Forbidden,
                value: None,
                detail: "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
            });
        }
        out.push(Violation {
            field: path.to_string(),
            kind: ViolationKind::Forbidden,
            value: None,
            detail: cost_error_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                total.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            ),
        });
    }
    out
}

/// `cardinality`: how many values of this node one object can hold (the product of the
/// enclosing lists' and maps' sizes), the number of times its rules can run.
fn walk(
    node: &Value,
    path: &FieldPath,
    cardinality: u64,
    is_root: bool,
    total: &mut TotalCost,
    out: &mut Vec<Violation>,
) {
    let Some(obj) = node.as_object() else { return };
    if let Some(rules) = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
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
                continue;
            }
            let Some((per_call, undefined)) = estimate(rule, node, is_root) else {
                continue;
            };
            if let Some(field) = undefined {
                out.push(Violation {
                    field: rp.child("rule").to_string(),
                    kind: ViolationKind::Invalid,
                    value: Some(Value::from(rule)),
                    detail: undefined_field_message(rule, &field),
                });
                continue;
            }
            let cost = per_call.saturating_mul(cardinality);
            let rule_path = rp.child("rule").to_string();
            if cost > STATIC_ESTIMATED_COST_LIMIT {
                out.push(Violation {
                    field: rule_path.clone(),
                    kind: ViolationKind::Forbidden,
                    value: None,
                    detail: cost_error_message(
                        "estimated rule cost",
                        cost,
                        STATIC_ESTIMATED_COST_LIMIT,
                    ),
                });
            }
            total.observe(rule_path, cost);
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(
                v,
                &path.child("properties").key(k),
                cardinality,
                false,
                total,
                out,
            );
        }
    }
    if let Some(items) = obj.get("items") {
        let n = cardinality.saturating_mul(max_elements(node));
        walk(items, &path.child("items"), n, false, total, out);
    }
    if let Some(a) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        let n = cardinality.saturating_mul(max_elements(node));
        walk(a, &path.child("additionalProperties"), n, false, total, out);
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

    /// A CRD whose `spec.names` list holds `n` rules of the given cost shape.
    fn names_schema(rules: usize, max_items: u64, max_length: u64) -> Value {
        let rules: Vec<Value> = (0..rules)
            .map(|i| json!({"rule": format!("self.contains('{i}')")}))
            .collect();
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "names": {"type": "array", "maxItems": max_items,
                      "items": {"type": "string", "maxLength": max_length, "x-kubernetes-validations": rules}}}}}})
    }

    #[test]
    fn costs_are_held_to_upstreams_limits_per_rule_and_per_schema() {
        let root = FieldPath::root("spec.versions[0].schema.openAPIV3Schema");
        // 1,000 strings of up to 10,000 characters: about 4,000,000 per rule. One rule is
        // fine (upstream's per-expression limit is 10,000,000, not 1,000,000).
        assert!(check_rules(&names_schema(1, 1000, 10_000), &root).is_empty());
        // Forty of them are 160,000,000 together: over the CRD's 100,000,000.
        let got = check_rules(&names_schema(40, 1000, 10_000), &root);
        let total = got.last().expect("a total violation");
        assert_eq!(total.field, "spec.versions[0].schema.openAPIV3Schema");
        assert_eq!(total.kind, ViolationKind::Forbidden);
        assert!(
            total.detail.starts_with("x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1.6x (try simplifying the rule"),
            "{total:?}"
        );
        let named: Vec<&Violation> = got
            .iter()
            .filter(|v| {
                v.detail
                    .starts_with("contributed to estimated rule cost total")
            })
            .collect();
        assert_eq!(named.len(), 4, "{got:#?}");
        assert_eq!(got.len(), 5, "{got:#?}");
        // Ten times longer strings: each rule alone is over its limit.
        let got = check_rules(&names_schema(1, 1000, 100_000), &root);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(
            got[0].message(),
            "Forbidden: estimated rule cost exceeds budget by factor of 4.0x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
    }

    #[test]
    fn undeclared_fields_do_not_compile() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"x": {"type": "integer"}, "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            "x-kubernetes-validations": [{"rule": "self.x > 0"}, {"rule": "self.z > 0"}, {"rule": "has(self.free.anything)"}]}},
            "x-kubernetes-validations": [{"rule": "self.metadata.name != '' && self.spec.x >= 0"}]});
        let got = check_rules(&s, &FieldPath::root("s"));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(
            got[0].field,
            "s.properties[spec].x-kubernetes-validations[1].rule"
        );
        assert!(
            got[0]
                .detail
                .starts_with("compilation failed: ERROR: <input>:1:5: undefined field 'z'"),
            "{got:#?}"
        );
    }
}
