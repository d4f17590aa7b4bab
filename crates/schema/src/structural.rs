//! The rules that make a schema structural (upstream's `apiextensions` validation): every
//! field typed, junctors value-only, no `$ref`, list/map extensions consistent, defaults valid.

use serde_json::Value;

use crate::path::FieldPath;
use crate::schema::Schema;
use crate::validate::{validate, Violation, ViolationKind};

pub(crate) const FORBIDDEN: &[&str] = &[
    "$ref",
    "$schema",
    "id",
    "definitions",
    "dependencies",
    "patternProperties",
    "additionalItems",
];

fn v(path: &FieldPath, kind: ViolationKind, value: Option<Value>, detail: &str) -> Violation {
    Violation {
        field: path.to_string(),
        kind,
        value,
        detail: detail.into(),
    }
}

/// Every structural violation of `s`, the `openAPIV3Schema` at `path`.
pub fn check_structural(s: &Schema, path: &FieldPath) -> Vec<Violation> {
    let mut out = Vec::new();
    match s.type_.as_deref() {
        None => out.push(v(
            &path.child("type"),
            ViolationKind::Required,
            None,
            "must not be empty at the root",
        )),
        Some("object") => {}
        Some(t) => out.push(v(
            &path.child("type"),
            ViolationKind::Invalid,
            Some(Value::from(t)),
            "must be object at the root",
        )),
    }
    if let Some(meta) = s.properties.get("metadata") {
        let extra: Vec<&String> = meta
            .properties
            .keys()
            .filter(|k| *k != "name" && *k != "generateName")
            .collect();
        if !extra.is_empty() || meta.type_.as_deref().is_some_and(|t| t != "object") {
            out.push(v(&path.child("properties").key("metadata"), ViolationKind::Forbidden, None,
                "must not specify anything other than name and generateName, but metadata is implicitly specified"));
        }
    }
    node(s, path, false, false, &mut out);
    out
}

/// `anyOf: [{type: integer}, {type: string}]` exactly: the shape controller-gen and other
/// generators give int-or-string (and quantity) fields, which upstream lets through.
fn is_int_or_string_pair(any_of: &[Schema]) -> bool {
    any_of.len() == 2
        && any_of[0].type_only
        && any_of[0].type_.as_deref() == Some("integer")
        && any_of[1].type_only
        && any_of[1].type_.as_deref() == Some("string")
}

/// `skip_any_of`: this node's `anyOf` is the int-or-string pattern of its parent (upstream's
/// skipAnyOf / skipAllOfAnyOf), and is not held to the structural rules.
fn node(s: &Schema, p: &FieldPath, in_junctor: bool, skip_any_of: bool, out: &mut Vec<Violation>) {
    for k in &s.forbidden_keys {
        out.push(v(
            &p.child(k),
            ViolationKind::Forbidden,
            None,
            &format!("{k} is not supported"),
        ));
    }
    if in_junctor {
        let mut forbid = |set: bool, name: &str| {
            if set {
                out.push(v(
                    &p.child(name),
                    ViolationKind::Forbidden,
                    None,
                    "must be empty to be structural",
                ));
            }
        };
        forbid(s.type_.is_some(), "type");
        forbid(s.default.is_some(), "default");
        forbid(s.nullable, "nullable");
        forbid(s.additional_properties.is_some(), "additionalProperties");
        forbid(s.preserve_unknown, "x-kubernetes-preserve-unknown-fields");
        forbid(s.embedded_resource, "x-kubernetes-embedded-resource");
        forbid(s.int_or_string, "x-kubernetes-int-or-string");
    } else {
        for (name, child) in &s.properties {
            let cp = p.child("properties").key(name);
            if child.type_.is_none() && !child.int_or_string && !child.preserve_unknown {
                out.push(v(
                    &cp.child("type"),
                    ViolationKind::Required,
                    None,
                    "must not be empty for specified object fields",
                ));
            }
        }
        if let Some(items) = &s.items {
            if items.type_.is_none() && !items.int_or_string && !items.preserve_unknown {
                out.push(v(
                    &p.child("items").child("type"),
                    ViolationKind::Required,
                    None,
                    "must not be empty for specified array items",
                ));
            }
        }
    }
    if !s.properties.is_empty() && s.additional_properties.is_some() {
        out.push(v(
            &p.child("additionalProperties"),
            ViolationKind::Forbidden,
            None,
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if s.type_.as_deref() == Some("array") && s.items.is_none() {
        out.push(v(
            &p.child("items"),
            ViolationKind::Required,
            None,
            "must be specified",
        ));
    }
    if s.int_or_string && s.type_.is_some() {
        out.push(v(
            &p.child("type"),
            ViolationKind::Invalid,
            s.type_.clone().map(Value::from),
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    if let Some(lt) = &s.list_type {
        if !["atomic", "set", "map"].contains(&lt.as_str()) {
            out.push(v(
                &p.child("x-kubernetes-list-type"),
                ViolationKind::NotSupported,
                Some(Value::from(lt.as_str())),
                "supported values: \"atomic\", \"set\", \"map\"",
            ));
        } else if s.type_.as_deref() != Some("array") {
            out.push(v(
                &p.child("type"),
                ViolationKind::Invalid,
                s.type_.clone().map(Value::from),
                "must be array if x-kubernetes-list-type is specified",
            ));
        }
        if lt == "map" {
            if s.list_map_keys.is_empty() {
                out.push(v(
                    &p.child("x-kubernetes-list-map-keys"),
                    ViolationKind::Required,
                    None,
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            match &s.items {
                Some(items) if items.type_.as_deref() == Some("object") => {
                    for key in &s.list_map_keys {
                        match items.properties.get(key) {
                            None => out.push(v(
                                &p.child("items").child("properties").key(key),
                                ViolationKind::Required,
                                None,
                                "entries for all x-kubernetes-list-map-keys are required",
                            )),
                            Some(ks) => {
                                if !matches!(
                                    ks.type_.as_deref(),
                                    Some("string" | "integer" | "number" | "boolean")
                                ) {
                                    out.push(v(&p.child("items").child("properties").key(key).child("type"), ViolationKind::Invalid, ks.type_.clone().map(Value::from), "must be a scalar type if parent array's x-kubernetes-list-type is map"));
                                }
                                if !items.required.contains(key) && ks.default.is_none() {
                                    out.push(v(&p.child("items").child("required"), ViolationKind::Required, None, &format!("all map keys must be required or have a default value: {key:?}")));
                                }
                            }
                        }
                    }
                }
                _ => out.push(v(
                    &p.child("items").child("type"),
                    ViolationKind::Invalid,
                    None,
                    "must be object if parent array's x-kubernetes-list-type is map",
                )),
            }
        }
    } else if !s.list_map_keys.is_empty() {
        out.push(v(
            &p.child("x-kubernetes-list-type"),
            ViolationKind::Required,
            None,
            "must be map if x-kubernetes-list-map-keys is non-empty",
        ));
    }
    if let Some(mt) = &s.map_type {
        if !["atomic", "granular"].contains(&mt.as_str()) {
            out.push(v(
                &p.child("x-kubernetes-map-type"),
                ViolationKind::NotSupported,
                Some(Value::from(mt.as_str())),
                "supported values: \"granular\", \"atomic\"",
            ));
        }
    }
    if let Some(d) = &s.default {
        if !in_junctor {
            for viol in validate(s, d, &p.child("default")) {
                out.push(v(
                    &p.child("default"),
                    ViolationKind::Invalid,
                    Some(d.clone()),
                    &viol.message(),
                ));
            }
        }
    }
    for (name, child) in &s.properties {
        node(
            child,
            &p.child("properties").key(name),
            in_junctor,
            false,
            out,
        );
    }
    if let Some(Some(a)) = &s.additional_properties {
        node(a, &p.child("additionalProperties"), in_junctor, false, out);
    }
    if let Some(items) = &s.items {
        node(items, &p.child("items"), in_junctor, false, out);
    }
    let int_or_string_any_of = s.int_or_string && is_int_or_string_pair(&s.any_of);
    let int_or_string_all_of =
        s.int_or_string && s.all_of.len() == 1 && is_int_or_string_pair(&s.all_of[0].any_of);
    for (key, list) in [
        ("allOf", &s.all_of),
        ("anyOf", &s.any_of),
        ("oneOf", &s.one_of),
    ] {
        if key == "anyOf" && (skip_any_of || int_or_string_any_of) {
            continue;
        }
        for (i, sub) in list.iter().enumerate() {
            let skip = key == "allOf" && int_or_string_all_of;
            node(sub, &p.child(key).index(i), true, skip, out);
        }
    }
    if let Some(n) = &s.not {
        node(n, &p.child("not"), true, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_int_or_string_and_quantity_shapes_are_structural() {
        let pair = json!([{"type": "integer"}, {"type": "string"}]);
        let ok = json!({"type": "object", "properties": {
            "port": {"anyOf": pair, "x-kubernetes-int-or-string": true},
            "cpu": {"anyOf": pair, "pattern": "^[0-9]+m?$", "x-kubernetes-int-or-string": true},
            "wrapped": {"allOf": [{"anyOf": pair}], "x-kubernetes-int-or-string": true},
            "list": {"type": "array", "items": {"anyOf": pair, "x-kubernetes-int-or-string": true}},
        }});
        assert_eq!(problems(ok), Vec::<String>::new());
        // Only that exact pair, and only with x-kubernetes-int-or-string.
        let p = "spec.versions[0].schema.openAPIV3Schema.properties";
        assert_eq!(
            problems(json!({"type": "object", "properties": {
                "a": {"type": "string", "anyOf": pair},
                "b": {"anyOf": [{"type": "string"}, {"type": "integer"}], "x-kubernetes-int-or-string": true},
            }})),
            [
                format!("{p}[a].anyOf[0].type: Forbidden: must be empty to be structural"),
                format!("{p}[a].anyOf[1].type: Forbidden: must be empty to be structural"),
                format!("{p}[b].anyOf[0].type: Forbidden: must be empty to be structural"),
                format!("{p}[b].anyOf[1].type: Forbidden: must be empty to be structural"),
            ]
        );
    }

    fn problems(v: Value) -> Vec<String> {
        let p = FieldPath::root("spec.versions[0].schema.openAPIV3Schema");
        let s = Schema::parse(&v, &p).unwrap();
        check_structural(&s, &p)
            .into_iter()
            .map(|x| format!("{}: {}", x.field, x.message()))
            .collect()
    }

    #[test]
    fn structural_rules() {
        assert!(problems(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}})).is_empty());
        let got = problems(json!({"type": "object", "properties": {
            "spec": {"properties": {"a": {"type": "string"}}},
            "list": {"type": "array"},
            "m": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": {"type": "string"}},
            "j": {"type": "string", "anyOf": [{"type": "string"}]},
            "r": {"$ref": "#/definitions/x", "type": "object"},
            "d": {"type": "integer", "default": "one"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
        }}));
        let p = "spec.versions[0].schema.openAPIV3Schema.properties";
        for want in [
            format!("{p}[spec].type: Required value: must not be empty for specified object fields"),
            format!("{p}[list].items: Required value: must be specified"),
            format!("{p}[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"),
            format!("{p}[j].anyOf[0].type: Forbidden: must be empty to be structural"),
            format!("{p}[r].$ref: Forbidden: $ref is not supported"),
            format!("{p}[ports].items.required: Required value: all map keys must be required or have a default value: \"name\""),
        ] {
            assert!(got.contains(&want), "missing {want}\n{got:#?}");
        }
        assert!(
            got.iter()
                .any(|g| g.starts_with(&format!("{p}[d].default: Invalid value: \"one\""))),
            "{got:#?}"
        );
        assert_eq!(problems(json!({"type": "string"})), ["spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root"]);
    }
}
