//! A parsed `JSONSchemaProps`: the fields validation, pruning and defaulting read, with
//! patterns compiled once (and shared) when the CRD is loaded rather than on every request.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::path::FieldPath;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SchemaError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub type_: Option<String>,
    pub format: Option<String>,
    pub properties: BTreeMap<String, Schema>,
    /// `additionalProperties: <schema>` (a map); `Some(None)` for `true`.
    pub additional_properties: Option<Option<Box<Schema>>>,
    pub additional_properties_false: bool,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enum_: Vec<Value>,
    pub pattern: Option<Arc<Regex>>,
    pub pattern_text: Option<String>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub unique_items: bool,
    pub nullable: bool,
    pub default: Option<Value>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    pub int_or_string: bool,
    pub preserve_unknown: bool,
    pub embedded_resource: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    /// Keys of the JSON this was parsed from that a structural schema may not have
    /// (`$ref`, `patternProperties` …): the structural check reports them. The JSON itself
    /// is not kept — a copy per node made memory grow with the square of the depth.
    pub forbidden_keys: Vec<&'static str>,
    /// The JSON was `{"type": …}` and nothing else (an int-or-string `anyOf` branch).
    pub type_only: bool,
}

fn bad(path: &FieldPath, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

fn uint(v: &Value, key: &str, path: &FieldPath) -> Result<Option<u64>, SchemaError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(&path.child(key), "must be a non-negative integer")),
    }
}

fn float(v: &Value, key: &str, path: &FieldPath) -> Result<Option<f64>, SchemaError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(&path.child(key), "must be a number")),
    }
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

impl Schema {
    /// Parse `openAPIV3Schema`; `path` names it in errors
    /// (`spec.versions[0].schema.openAPIV3Schema`).
    pub fn parse(v: &Value, path: &FieldPath) -> Result<Schema, SchemaError> {
        let Some(obj) = v.as_object() else {
            return Err(bad(path, "must be an object"));
        };
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(String::from);
        let mut out = Schema {
            type_: s("type").filter(|t| !t.is_empty()),
            format: s("format").filter(|t| !t.is_empty()),
            forbidden_keys: crate::structural::FORBIDDEN
                .iter()
                .copied()
                .filter(|k| obj.contains_key(*k))
                .collect(),
            type_only: obj.len() == 1 && obj.contains_key("type"),
            ..Default::default()
        };
        if let Some(props) = obj.get("properties") {
            let props = props
                .as_object()
                .ok_or_else(|| bad(&path.child("properties"), "must be an object"))?;
            for (k, p) in props {
                out.properties.insert(
                    k.clone(),
                    Schema::parse(p, &path.child("properties").key(k))?,
                );
            }
        }
        match obj.get("additionalProperties") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(true)) => out.additional_properties = Some(None),
            Some(Value::Bool(false)) => out.additional_properties_false = true,
            Some(a) => {
                out.additional_properties = Some(Some(Box::new(Schema::parse(
                    a,
                    &path.child("additionalProperties"),
                )?)))
            }
        }
        if let Some(items) = obj.get("items") {
            if items.is_array() {
                return Err(bad(
                    &path.child("items"),
                    "items must be a schema object and not an array",
                ));
            }
            out.items = Some(Box::new(Schema::parse(items, &path.child("items"))?));
        }
        if let Some(r) = obj.get("required") {
            out.required = r
                .as_array()
                .ok_or_else(|| bad(&path.child("required"), "must be a list of strings"))?
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(&path.child("required"), "must be a list of strings"))?;
        }
        if let Some(e) = obj.get("enum") {
            out.enum_ = e
                .as_array()
                .ok_or_else(|| bad(&path.child("enum"), "must be a list"))?
                .clone();
        }
        if let Some(p) = s("pattern") {
            let re = crate::pattern::compile(&p).map_err(|e| {
                bad(
                    &path.child("pattern"),
                    format!("must be a valid regular expression, but isn't: {e}"),
                )
            })?;
            out.pattern = Some(re);
            out.pattern_text = Some(p);
        }
        out.minimum = float(v, "minimum", path)?;
        out.maximum = float(v, "maximum", path)?;
        out.multiple_of = float(v, "multipleOf", path)?;
        out.exclusive_minimum = flag(v, "exclusiveMinimum");
        out.exclusive_maximum = flag(v, "exclusiveMaximum");
        out.min_length = uint(v, "minLength", path)?;
        out.max_length = uint(v, "maxLength", path)?;
        out.min_items = uint(v, "minItems", path)?;
        out.max_items = uint(v, "maxItems", path)?;
        out.min_properties = uint(v, "minProperties", path)?;
        out.max_properties = uint(v, "maxProperties", path)?;
        out.unique_items = flag(v, "uniqueItems");
        out.nullable = flag(v, "nullable");
        out.default = obj.get("default").cloned();
        for (key, dst) in [
            ("allOf", &mut out.all_of),
            ("anyOf", &mut out.any_of),
            ("oneOf", &mut out.one_of),
        ] {
            if let Some(list) = obj.get(key) {
                let list = list
                    .as_array()
                    .ok_or_else(|| bad(&path.child(key), "must be a list of schemas"))?;
                for (i, x) in list.iter().enumerate() {
                    dst.push(Schema::parse(x, &path.child(key).index(i))?);
                }
            }
        }
        if let Some(n) = obj.get("not") {
            out.not = Some(Box::new(Schema::parse(n, &path.child("not"))?));
        }
        out.int_or_string = flag(v, "x-kubernetes-int-or-string");
        out.preserve_unknown = flag(v, "x-kubernetes-preserve-unknown-fields");
        out.embedded_resource = flag(v, "x-kubernetes-embedded-resource");
        out.list_type = s("x-kubernetes-list-type");
        out.map_type = s("x-kubernetes-map-type");
        if let Some(keys) = obj.get("x-kubernetes-list-map-keys") {
            out.list_map_keys = keys
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        }
        Ok(out)
    }

    /// The schema of a property (or of a map value); `None` when the field is unknown.
    pub fn property(&self, name: &str) -> Option<&Schema> {
        self.properties.get(name).or_else(|| {
            self.additional_properties
                .as_ref()
                .and_then(|a| a.as_deref())
        })
    }
}
