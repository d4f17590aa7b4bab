//! Pruning (dropping fields the schema does not know, unless it preserves them) and
//! defaulting (filling `default`s in), both walking the object by its structural schema.

use serde_json::Value;

use crate::path::FieldPath;
use crate::schema::Schema;

/// Remove unknown fields from `v`, returning their paths (for `fieldValidation`).
/// At the root and in embedded resources, `apiVersion`, `kind` and `metadata` are kept.
pub fn prune(schema: &Schema, v: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, v, &FieldPath::default(), true, &mut out);
    out
}

fn walk(s: &Schema, v: &mut Value, p: &FieldPath, resource: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_path = p.child(&k);
                if let Some(cs) = s.properties.get(&k) {
                    if let Some(child) = map.get_mut(&k) {
                        walk(cs, child, &child_path, cs.embedded_resource, out);
                    }
                } else if let Some(additional) = &s.additional_properties {
                    if let (Some(cs), Some(child)) = (additional.as_deref(), map.get_mut(&k)) {
                        walk(cs, child, &child_path, cs.embedded_resource, out);
                    }
                } else if !s.preserve_unknown {
                    map.remove(&k);
                    out.push(child_path.to_string());
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = &s.items {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(is, item, &p.index(i), is.embedded_resource, out);
                }
            }
        }
        _ => {}
    }
}

/// Fill in every `default` the schema gives for a missing field (and for a null in a
/// non-nullable one), recursively, as upstream does on create, update and read.
pub fn apply_defaults(s: &Schema, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, cs) in &s.properties {
                let missing = match map.get(k) {
                    None => true,
                    Some(Value::Null) => !cs.nullable,
                    Some(_) => false,
                };
                if missing {
                    if let Some(d) = &cs.default {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                if let Some(cs) = s.properties.get(k) {
                    apply_defaults(cs, child);
                } else if let Some(Some(cs)) = &s.additional_properties {
                    apply_defaults(cs, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = &s.items {
                for item in items {
                    apply_defaults(is, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        Schema::parse(&v, &FieldPath::default()).unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved() {
        let s = schema(json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "a": {"type": "string"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {"type": "string"}}}},
            "list": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            "embedded": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}}
        }}}}));
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "extra": 1,
            "spec": {"a": "ok", "b": 2, "free": {"anything": [1]}, "m": {"one": {"x": "y", "z": 1}},
                     "list": [{"k": "v", "q": 1}], "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}, "junk": 1}}});
        let mut pruned = prune(&s, &mut v);
        pruned.sort();
        assert_eq!(
            pruned,
            [
                "extra",
                "spec.b",
                "spec.embedded.junk",
                "spec.list[0].q",
                "spec.m.one.z"
            ]
        );
        assert_eq!(v["metadata"]["name"], "n");
        assert_eq!(v["spec"]["free"]["anything"], json!([1]));
        assert_eq!(v["spec"]["embedded"]["kind"], "Pod");
    }

    #[test]
    fn defaults_fill_missing_and_null_fields_recursively() {
        let s = schema(
            json!({"type": "object", "properties": {"spec": {"type": "object", "default": {},
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "mode": {"type": "string", "default": "fast"},
                "opt": {"type": "string", "nullable": true, "default": "x"},
                "items": {"type": "array", "items": {"type": "object", "properties": {"w": {"type": "integer", "default": 5}}}}
            }}}}),
        );
        let mut v = json!({});
        apply_defaults(&s, &mut v);
        assert_eq!(
            v,
            json!({"spec": {"replicas": 1, "mode": "fast", "opt": "x"}})
        );
        let mut v =
            json!({"spec": {"replicas": 3, "mode": null, "opt": null, "items": [{}, {"w": 2}]}});
        apply_defaults(&s, &mut v);
        assert_eq!(
            v,
            json!({"spec": {"replicas": 3, "mode": "fast", "opt": null, "items": [{"w": 5}, {"w": 2}]}})
        );
    }
}
