//! Validates a value against a structural schema, collecting every violation with the
//! upstream field path, reason and message (one 422 lists them all).

use std::collections::HashSet;

use serde_json::Value;

use crate::format;
use crate::path::FieldPath;
use crate::schema::Schema;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    TooLong,
    TooMany,
    Duplicate,
    Forbidden,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub kind: ViolationKind,
    pub value: Option<Value>,
    pub detail: String,
}

/// How upstream prints a bad value: strings quoted, everything else as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Violation {
    /// The `reason` of the Status cause.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ViolationKind::Required => "FieldValueRequired",
            ViolationKind::Invalid => "FieldValueInvalid",
            ViolationKind::TypeInvalid => "FieldValueTypeInvalid",
            ViolationKind::NotSupported => "FieldValueNotSupported",
            ViolationKind::TooLong => "FieldValueTooLong",
            ViolationKind::TooMany => "FieldValueTooMany",
            ViolationKind::Duplicate => "FieldValueDuplicate",
            ViolationKind::Forbidden => "FieldValueForbidden",
        }
    }
    /// The cause's message, as kubectl prints it after `field: `.
    pub fn message(&self) -> String {
        let value = self.value.as_ref().map(show).unwrap_or_default();
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match self.kind {
            ViolationKind::Required => with_detail("Required value".into()),
            ViolationKind::Invalid | ViolationKind::TypeInvalid => {
                with_detail(format!("Invalid value: {value}"))
            }
            ViolationKind::NotSupported => with_detail(format!("Unsupported value: {value}")),
            ViolationKind::TooLong => with_detail("Too long".into()),
            ViolationKind::TooMany => with_detail(format!("Too many: {value}")),
            ViolationKind::Duplicate => format!("Duplicate value: {value}"),
            ViolationKind::Forbidden => with_detail("Forbidden".into()),
        }
    }
}

struct Ctx {
    out: Vec<Violation>,
}

impl Ctx {
    fn push(
        &mut self,
        path: &FieldPath,
        kind: ViolationKind,
        value: Option<&Value>,
        detail: String,
    ) {
        self.out.push(Violation {
            field: path.to_string(),
            kind,
            value: value.cloned(),
            detail,
        });
    }
}

/// Every violation of `schema` by `value`; `path` is the value's own path (empty at the root).
pub fn validate(schema: &Schema, value: &Value, path: &FieldPath) -> Vec<Violation> {
    let mut ctx = Ctx { out: Vec::new() };
    node(schema, value, path, &mut ctx);
    ctx.out
}

/// `type_name` as a JSON string value, for a violation's "Invalid value".
fn type_value(v: &Value) -> &'static Value {
    static NAMES: std::sync::LazyLock<Vec<Value>> = std::sync::LazyLock::new(|| {
        [
            "null", "boolean", "integer", "number", "string", "array", "object",
        ]
        .into_iter()
        .map(Value::from)
        .collect()
    });
    let name = type_name(v);
    NAMES
        .iter()
        .find(|n| n.as_str() == Some(name))
        .unwrap_or(&NAMES[0])
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn node(s: &Schema, v: &Value, p: &FieldPath, ctx: &mut Ctx) {
    let name = if p.as_str().is_empty() {
        "body"
    } else {
        p.as_str()
    };
    if v.is_null() {
        if !s.nullable && (s.type_.is_some() || s.int_or_string) {
            let ty = s.type_.as_deref().unwrap_or("integer,string");
            ctx.push(
                p,
                ViolationKind::TypeInvalid,
                // Upstream shows the type of the wrong value, not the value itself.
                Some(type_value(v)),
                format!("{name} in body must be of type {ty}: \"null\""),
            );
        }
        return;
    }
    if s.int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            ctx.push(
                p,
                ViolationKind::TypeInvalid,
                // Upstream shows the type of the wrong value, not the value itself.
                Some(type_value(v)),
                format!(
                    "{name} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            );
            return;
        }
    } else if let Some(ty) = &s.type_ {
        if !type_matches(ty, v) {
            ctx.push(
                p,
                ViolationKind::TypeInvalid,
                // Upstream shows the type of the wrong value, not the value itself.
                Some(type_value(v)),
                format!("{name} in body must be of type {ty}: {:?}", type_name(v)),
            );
            return;
        }
    }
    if !s.bounds().enum_.is_empty() && !s.bounds().enum_.contains(v) {
        let allowed: Vec<String> = s.bounds().enum_.iter().map(show).collect();
        ctx.push(
            p,
            ViolationKind::NotSupported,
            Some(v),
            format!("supported values: {}", allowed.join(", ")),
        );
    }
    if let Some(f) = &s.format {
        if format::check(f, v) == Some(false) {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body must be of type {f}: {}", show(v)),
            );
        }
    }
    match v {
        Value::String(text) => string(s, text, v, p, name, ctx),
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                number(s, x, v, p, name, ctx);
            }
        }
        Value::Array(items) => array(s, items, v, p, name, ctx),
        Value::Object(map) => object(s, map, v, p, name, ctx),
        _ => {}
    }
    for sub in &s.all_of {
        node(sub, v, p, ctx);
    }
    if !s.any_of.is_empty() && !s.any_of.iter().any(|sub| validate(sub, v, p).is_empty()) {
        ctx.push(
            p,
            ViolationKind::Invalid,
            Some(v),
            format!("{name} in body must validate at least one schema (anyOf)"),
        );
    }
    if !s.one_of.is_empty() {
        let passing = s
            .one_of
            .iter()
            .filter(|sub| validate(sub, v, p).is_empty())
            .count();
        if passing != 1 {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body must validate one and only one schema (oneOf)"),
            );
        }
    }
    if let Some(not) = &s.not {
        if validate(not, v, p).is_empty() {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body must not validate the schema (not)"),
            );
        }
    }
}

fn string(s: &Schema, text: &str, v: &Value, p: &FieldPath, name: &str, ctx: &mut Ctx) {
    let len = text.chars().count() as u64;
    if let Some(max) = s.bounds().max_length {
        if len > max {
            ctx.push(
                p,
                ViolationKind::TooLong,
                Some(v),
                format!("may not be more than {max} bytes"),
            );
        }
    }
    if let Some(min) = s.bounds().min_length {
        if len < min {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be at least {min} chars long"),
            );
        }
    }
    if let (Some(re), Some(src)) = (&s.bounds().pattern, &s.bounds().pattern_text) {
        if !re.is_match(text) {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should match '{src}'"),
            );
        }
    }
}

fn number(s: &Schema, x: f64, v: &Value, p: &FieldPath, name: &str, ctx: &mut Ctx) {
    if let Some(min) = s.bounds().minimum {
        if s.bounds().exclusive_minimum && x <= min {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be greater than {min}"),
            );
        } else if x < min {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be greater than or equal to {min}"),
            );
        }
    }
    if let Some(max) = s.bounds().maximum {
        if s.bounds().exclusive_maximum && x >= max {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be less than {max}"),
            );
        } else if x > max {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be less than or equal to {max}"),
            );
        }
    }
    if let Some(m) = s.bounds().multiple_of {
        if m != 0.0 && (x / m).fract().abs() > 1e-9 {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should be a multiple of {m}"),
            );
        }
    }
}

fn array(s: &Schema, items: &[Value], v: &Value, p: &FieldPath, name: &str, ctx: &mut Ctx) {
    let n = items.len() as u64;
    if let Some(max) = s.bounds().max_items {
        if n > max {
            ctx.push(
                p,
                ViolationKind::TooMany,
                Some(&Value::from(n)),
                format!("must have at most {max} items"),
            );
        }
    }
    if let Some(min) = s.bounds().min_items {
        if n < min {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should have at least {min} items"),
            );
        }
    }
    let list_type = s.list_type.as_deref().unwrap_or("atomic");
    if s.bounds().unique_items || list_type == "set" {
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if !seen.insert(item.to_string()) {
                ctx.push(
                    &p.index(i),
                    ViolationKind::Duplicate,
                    Some(item),
                    String::new(),
                );
            }
        }
    }
    if list_type == "map" && !s.list_map_keys.is_empty() {
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let key: Vec<Value> = s
                .list_map_keys
                .iter()
                .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                .collect();
            if !seen.insert(Value::Array(key.clone()).to_string()) {
                let shown: serde_json::Map<String, Value> =
                    s.list_map_keys.iter().cloned().zip(key).collect();
                ctx.push(
                    &p.index(i),
                    ViolationKind::Duplicate,
                    Some(&Value::Object(shown)),
                    String::new(),
                );
            }
        }
    }
    if let Some(item_schema) = &s.items {
        for (i, item) in items.iter().enumerate() {
            node(item_schema, item, &p.index(i), ctx);
        }
    }
}

fn object(
    s: &Schema,
    map: &serde_json::Map<String, Value>,
    v: &Value,
    p: &FieldPath,
    name: &str,
    ctx: &mut Ctx,
) {
    for r in &s.required {
        if !map.contains_key(r) {
            ctx.push(&p.child(r), ViolationKind::Required, None, String::new());
        }
    }
    let n = map.len() as u64;
    if let Some(max) = s.bounds().max_properties {
        if n > max {
            ctx.push(
                p,
                ViolationKind::TooMany,
                Some(&Value::from(n)),
                format!("must have at most {max} items"),
            );
        }
    }
    if let Some(min) = s.bounds().min_properties {
        if n < min {
            ctx.push(
                p,
                ViolationKind::Invalid,
                Some(v),
                format!("{name} in body should have at least {min} properties"),
            );
        }
    }
    if s.embedded_resource {
        for f in ["apiVersion", "kind"] {
            if map.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                ctx.push(
                    &p.child(f),
                    ViolationKind::Required,
                    None,
                    "must not be empty".into(),
                );
            }
        }
    }
    for (k, child) in map {
        if let Some(cs) = s.properties.get(k) {
            node(cs, child, &p.child(k), ctx);
        } else if let Some(Some(cs)) = &s.additional_properties {
            node(cs, child, &p.child(k), ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, value: Value) -> Vec<(String, String)> {
        let s = Schema::parse(&schema, &FieldPath::default()).unwrap();
        validate(&s, &value, &FieldPath::default())
            .into_iter()
            .map(|v| (v.field.clone(), v.message()))
            .collect()
    }

    #[test]
    fn every_violation_is_reported_with_its_path() {
        let schema = json!({"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["size"],
        "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "format": "int32"},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "size": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer", "exclusiveMinimum": true, "minimum": 0}}}},
            "port": {"x-kubernetes-int-or-string": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1},
            "when": {"type": "string", "format": "date-time", "nullable": true}
        }}}});
        let got = check(
            schema.clone(),
            json!({"spec": {
            "replicas": -1, "color": "pink", "name": "ABCDEFG", "tags": ["a", "a", "b", "c"],
            "ports": [{"name": "http", "port": 0}, {"name": "http", "port": 1}],
            "port": true, "labels": {"a": "x", "b": 1}, "when": null}}),
        );
        let want = [
            ("spec.size", "Required value"),
            ("spec.color", "Unsupported value: \"pink\": supported values: \"red\", \"blue\""),
            ("spec.labels", "Too many: 2: must have at most 1 items"),
            ("spec.labels.b", "Invalid value: \"integer\": spec.labels.b in body must be of type string: \"integer\""),
            ("spec.name", "Too long: may not be more than 5 bytes"),
            ("spec.name", "Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"),
            ("spec.port", "Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""),
            ("spec.ports[1]", "Duplicate value: {\"name\":\"http\"}"),
            ("spec.ports[0].port", "Invalid value: 0: spec.ports[0].port in body should be greater than 0"),
            ("spec.replicas", "Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
            ("spec.tags", "Too many: 4: must have at most 3 items"),
            ("spec.tags[1]", "Duplicate value: \"a\""),
        ];
        for (f, m) in want {
            assert!(
                got.contains(&(f.to_string(), m.to_string())),
                "missing {f}: {m}\n got {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
        assert_eq!(
            check(schema, json!({})),
            vec![("spec".into(), "Required value".into())]
        );
    }

    #[test]
    fn junctors_and_formats() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
            "b": {"type": "integer", "oneOf": [{"minimum": 0}, {"maximum": 10}]},
            "c": {"type": "string", "not": {"enum": ["forbidden"]}},
            "d": {"type": "string", "format": "date-time"}}});
        let got = check(
            s.clone(),
            json!({"a": "nope", "b": 5, "c": "forbidden", "d": "soon"}),
        );
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["a", "b", "c", "d"], "{got:#?}");
        assert!(check(
            s,
            json!({"a": "::1", "b": 11, "c": "ok", "d": "2024-01-01T00:00:00Z"})
        )
        .is_empty());
    }
}
