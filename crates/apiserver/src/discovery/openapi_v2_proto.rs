//! `/openapi/v2` in protobuf: gnostic's `openapi.v2.Document` messages (the subset a
//! Kubernetes document uses, field numbers as gnostic's OpenAPIv2.proto) and the JSON → message walk.

use prost::Message;
use serde_json::{Map, Value};

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "12")]
    pub security: Vec<SecurityRequirement>,
    #[prost(message, optional, tag = "13")]
    pub security_definitions: Option<SecurityDefinitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// gnostic keeps values it does not model (vendor extensions, defaults, enums) as YAML text.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

pub mod parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, boxed, tag = "1")]
        BodyParameter(Box<super::BodyParameter>),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "1, 3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

pub mod non_body_parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        HeaderParameterSubSchema(super::SimpleParameter),
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameter),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::SimpleParameter),
    }
}

/// gnostic's Header- and PathParameterSubSchema: the same leading fields.
#[derive(Clone, PartialEq, Message)]
pub struct SimpleParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

/// gnostic's QueryParameterSubSchema (numbered one further than a path parameter from
/// `allow_empty_value` on).
#[derive(Clone, PartialEq, Message)]
pub struct QueryParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    /// The `response` arm of gnostic's oneof (a `$ref` arm is never written).
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SchemaItem {
    /// The `schema` arm of gnostic's oneof (never a file schema here).
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub reference: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

pub mod additional_properties_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, boxed, tag = "1")]
        Schema(Box<super::Schema>),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityRequirement {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedStringArray>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedStringArray {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<StringArray>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringArray {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityDefinitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSecurityDefinitionsItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<SecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityDefinitionsItem {
    /// The `api_key_security` arm of gnostic's oneof.
    #[prost(message, optional, tag = "2")]
    pub api_key_security: Option<ApiKeySecurity>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ApiKeySecurity {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub description: String,
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn entries(v: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    v.and_then(Value::as_object).into_iter().flat_map(Map::iter)
}

/// A value as gnostic stores it: YAML text. JSON is YAML; spaces after `:` and `,` keep
/// every YAML parser (1.1 and 1.2) reading flow collections the same way.
fn any(v: &Value) -> Any {
    let mut out = String::new();
    write_yaml_flow(v, &mut out);
    out.push('\n');
    Any { yaml: out }
}

fn write_yaml_flow(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_yaml_flow(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_yaml_flow(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    entries(Some(v))
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, val)| NamedAny {
            name: k.clone(),
            value: Some(any(val)),
        })
        .collect()
}

fn schema(v: &Value) -> Schema {
    let f64_of = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i64_of = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let bool_of = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let named = |k: &str| -> Vec<NamedSchema> {
        entries(v.get(k))
            .map(|(name, s)| NamedSchema {
                name: name.clone(),
                value: Some(schema(s)),
            })
            .collect()
    };
    Schema {
        reference: str_of(v, "$ref"),
        format: str_of(v, "format"),
        title: str_of(v, "title"),
        description: str_of(v, "description"),
        default: v.get("default").map(any),
        multiple_of: f64_of("multipleOf"),
        maximum: f64_of("maximum"),
        exclusive_maximum: bool_of("exclusiveMaximum"),
        minimum: f64_of("minimum"),
        exclusive_minimum: bool_of("exclusiveMinimum"),
        max_length: i64_of("maxLength"),
        min_length: i64_of("minLength"),
        pattern: str_of(v, "pattern"),
        max_items: i64_of("maxItems"),
        min_items: i64_of("minItems"),
        unique_items: bool_of("uniqueItems"),
        max_properties: i64_of("maxProperties"),
        min_properties: i64_of("minProperties"),
        required: strings(v, "required"),
        r#enum: v
            .get("enum")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: match v.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(Box::new(AdditionalPropertiesItem {
                oneof: Some(additional_properties_item::Oneof::Boolean(*b)),
            })),
            Some(s @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
                oneof: Some(additional_properties_item::Oneof::Schema(Box::new(schema(
                    s,
                )))),
            })),
            _ => None,
        },
        r#type: v.get("type").map(|_| TypeItem {
            value: strings(v, "type"),
        }),
        items: match v.get("items") {
            Some(Value::Array(a)) => Some(ItemsItem {
                schema: a.iter().map(schema).collect(),
            }),
            Some(s @ Value::Object(_)) => Some(ItemsItem {
                schema: vec![schema(s)],
            }),
            _ => None,
        },
        all_of: v
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: v.get("properties").map(|_| Properties {
            additional_properties: named("properties"),
        }),
        read_only: bool_of("readOnly"),
        example: v.get("example").map(any),
        vendor_extension: extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    let oneof = match p.get("in").and_then(Value::as_str) {
        Some("body") => parameter::Oneof::BodyParameter(Box::new(BodyParameter {
            description: str_of(p, "description"),
            name: str_of(p, "name"),
            r#in: "body".into(),
            required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
            schema: p.get("schema").map(schema),
        })),
        Some("query") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(
                QueryParameter {
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    r#in: "query".into(),
                    description: str_of(p, "description"),
                    name: str_of(p, "name"),
                    r#type: str_of(p, "type"),
                    unique_items: p
                        .get("uniqueItems")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
            )),
        }),
        where_ => {
            let simple = SimpleParameter {
                required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                r#in: where_.unwrap_or("path").to_string(),
                description: str_of(p, "description"),
                name: str_of(p, "name"),
                r#type: str_of(p, "type"),
                unique_items: p
                    .get("uniqueItems")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            parameter::Oneof::NonBodyParameter(NonBodyParameter {
                oneof: Some(if where_ == Some("header") {
                    non_body_parameter::Oneof::HeaderParameterSubSchema(simple)
                } else {
                    non_body_parameter::Oneof::PathParameterSubSchema(simple)
                }),
            })
        }
    };
    ParametersItem {
        parameter: Some(Parameter { oneof: Some(oneof) }),
    }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.get("parameters")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(parameter).collect())
        .unwrap_or_default()
}

fn operation(op: &Value) -> Operation {
    Operation {
        tags: strings(op, "tags"),
        description: str_of(op, "description"),
        operation_id: str_of(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses: op.get("responses").map(|r| Responses {
            response_code: entries(Some(r))
                .map(|(code, resp)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        response: Some(Response {
                            description: str_of(resp, "description"),
                            schema: resp.get("schema").map(|s| SchemaItem {
                                schema: Some(schema(s)),
                            }),
                        }),
                    }),
                })
                .collect(),
        }),
        schemes: strings(op, "schemes"),
        vendor_extension: extensions(op),
    }
}

/// The message gnostic would parse from the Swagger 2.0 JSON document `doc`.
pub fn document(doc: &Value) -> Document {
    let op = |item: &Value, verb: &str| item.get(verb).map(operation);
    Document {
        swagger: str_of(doc, "swagger"),
        info: doc.get("info").map(|i| Info {
            title: str_of(i, "title"),
            version: str_of(i, "version"),
        }),
        paths: Some(Paths {
            vendor_extension: Vec::new(),
            path: entries(doc.get("paths"))
                .map(|(name, item)| NamedPathItem {
                    name: name.clone(),
                    value: Some(PathItem {
                        get: op(item, "get"),
                        put: op(item, "put"),
                        post: op(item, "post"),
                        delete: op(item, "delete"),
                        patch: op(item, "patch"),
                        parameters: parameters(item),
                        vendor_extension: extensions(item),
                    }),
                })
                .collect(),
        }),
        definitions: Some(Definitions {
            additional_properties: entries(doc.get("definitions"))
                .map(|(name, s)| NamedSchema {
                    name: name.clone(),
                    value: Some(schema(s)),
                })
                .collect(),
        }),
        security: doc
            .get("security")
            .and_then(Value::as_array)
            .map(|reqs| {
                reqs.iter()
                    .map(|r| SecurityRequirement {
                        additional_properties: entries(Some(r))
                            .map(|(name, scopes)| NamedStringArray {
                                name: name.clone(),
                                value: Some(StringArray {
                                    value: scopes
                                        .as_array()
                                        .map(|a| {
                                            a.iter()
                                                .filter_map(|s| s.as_str().map(String::from))
                                                .collect()
                                        })
                                        .unwrap_or_default(),
                                }),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        security_definitions: doc
            .get("securityDefinitions")
            .map(|defs| SecurityDefinitions {
                additional_properties: entries(Some(defs))
                    .map(|(name, d)| NamedSecurityDefinitionsItem {
                        name: name.clone(),
                        value: Some(SecurityDefinitionsItem {
                            api_key_security: Some(ApiKeySecurity {
                                r#type: str_of(d, "type"),
                                name: str_of(d, "name"),
                                r#in: str_of(d, "in"),
                                description: str_of(d, "description"),
                            }),
                        }),
                    })
                    .collect(),
            }),
    }
}

/// The protobuf encoding of the Swagger 2.0 JSON document `doc`.
pub fn encode(doc: &Value) -> Vec<u8> {
    document(doc).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vendor_extensions_round_trip_as_yaml_text() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {},
            "definitions": {"io.k8s.api.core.v1.ConfigMap": {
                "type": "object",
                "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}],
            }},
        });
        let decoded = Document::decode(encode(&doc).as_slice()).expect("decodes");
        let defs = decoded
            .definitions
            .expect("definitions")
            .additional_properties;
        let cm = defs[0].value.as_ref().expect("schema");
        assert_eq!(cm.r#type.as_ref().expect("type").value, ["object"]);
        let ext = &cm.vendor_extension[0];
        assert_eq!(ext.name, "x-kubernetes-group-version-kind");
        assert_eq!(
            ext.value.as_ref().expect("value").yaml,
            "[{\"group\": \"\", \"kind\": \"ConfigMap\", \"version\": \"v1\"}]\n"
        );
        let data = &cm
            .properties
            .as_ref()
            .expect("properties")
            .additional_properties[0];
        assert_eq!(data.name, "data");
    }
}
