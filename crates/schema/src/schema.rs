//! A parsed `JSONSchemaProps`: the fields validation, pruning and defaulting read, with
//! patterns compiled once (and shared) when the CRD is loaded rather than on every request.

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
    pub properties: Properties,
    /// `additionalProperties: <schema>` (a map); `Some(None)` for `true`.
    pub additional_properties: Option<Option<Box<Schema>>>,
    pub additional_properties_false: bool,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    /// Value bounds, when the node sets any (`bounds()` reads them).
    bounds: Option<Box<Bounds>>,
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

/// What a node bounds its value by. Most nodes set none of it, and a CRD version has
/// thousands of nodes, so it lives behind one pointer that is usually absent.
#[derive(Debug, Clone, Default)]
pub struct Bounds {
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
}

static NO_BOUNDS: Bounds = Bounds {
    enum_: Vec::new(),
    pattern: None,
    pattern_text: None,
    minimum: None,
    maximum: None,
    exclusive_minimum: false,
    exclusive_maximum: false,
    multiple_of: None,
    min_length: None,
    max_length: None,
    min_items: None,
    max_items: None,
    min_properties: None,
    max_properties: None,
    unique_items: false,
};

impl Bounds {
    fn is_unset(&self) -> bool {
        self.enum_.is_empty()
            && self.pattern.is_none()
            && self.minimum.is_none()
            && self.maximum.is_none()
            && !self.exclusive_minimum
            && !self.exclusive_maximum
            && self.multiple_of.is_none()
            && self.min_length.is_none()
            && self.max_length.is_none()
            && self.min_items.is_none()
            && self.max_items.is_none()
            && self.min_properties.is_none()
            && self.max_properties.is_none()
            && !self.unique_items
    }
}

/// An object's properties sorted by name, in a vector sized to fit (a B-tree node
/// reserves room for eleven schemas whatever the count).
#[derive(Debug, Clone, Default)]
pub struct Properties(Vec<(String, Schema)>);

fn pair(e: &(String, Schema)) -> (&String, &Schema) {
    (&e.0, &e.1)
}

impl Properties {
    pub fn get(&self, name: &str) -> Option<&Schema> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Schema)> {
        self.0.iter().map(pair)
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a Schema);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Schema)>,
        fn(&'a (String, Schema)) -> (&'a String, &'a Schema),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(pair)
    }
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
            let mut parsed = Vec::with_capacity(props.len());
            for (k, p) in props {
                parsed.push((
                    k.clone(),
                    Schema::parse(p, &path.child("properties").key(k))?,
                ));
            }
            parsed.sort_by(|a, b| a.0.cmp(&b.0));
            out.properties = Properties(parsed);
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
        let mut b = Bounds::default();
        if let Some(e) = obj.get("enum") {
            b.enum_ = e
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
            b.pattern = Some(re);
            b.pattern_text = Some(p);
        }
        b.minimum = float(v, "minimum", path)?;
        b.maximum = float(v, "maximum", path)?;
        b.multiple_of = float(v, "multipleOf", path)?;
        b.exclusive_minimum = flag(v, "exclusiveMinimum");
        b.exclusive_maximum = flag(v, "exclusiveMaximum");
        b.min_length = uint(v, "minLength", path)?;
        b.max_length = uint(v, "maxLength", path)?;
        b.min_items = uint(v, "minItems", path)?;
        b.max_items = uint(v, "maxItems", path)?;
        b.min_properties = uint(v, "minProperties", path)?;
        b.max_properties = uint(v, "maxProperties", path)?;
        b.unique_items = flag(v, "uniqueItems");
        if !b.is_unset() {
            out.bounds = Some(Box::new(b));
        }
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

    /// The node's value bounds (none set for most nodes).
    pub fn bounds(&self) -> &Bounds {
        self.bounds.as_deref().unwrap_or(&NO_BOUNDS)
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
