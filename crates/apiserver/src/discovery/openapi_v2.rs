//! `/openapi/v2`: one Swagger 2.0 document of every served group-version, converted from the
//! v3 documents `openapi.rs` builds, served as JSON or gnostic protobuf with upstream's ETag.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::AppState;

/// What kube-openapi's handler offers, in its order of preference for `*/*`.
const JSON: &str = "application/json";
const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// client-go still asks for this spelling; the answer is labelled with the current one.
const PROTOBUF_DEPRECATED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";

/// The document, built once per set of served types (on the first request for it).
pub struct SpecV2 {
    json: Bytes,
    /// Upper-case hex SHA-512 of the JSON, as kube-openapi computes it.
    etag: String,
    last_modified: SystemTime,
    /// Encoded on the first protobuf request.
    proto: OnceLock<Bytes>,
}

impl SpecV2 {
    /// Merge the v3 documents (one per group-version) into one v2 document.
    pub fn build<'a>(v3_docs: impl Iterator<Item = Cow<'a, Value>>) -> SpecV2 {
        let json = Bytes::from(document_json(v3_docs));
        let digest = ring::digest::digest(&ring::digest::SHA512, &json);
        let etag = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        SpecV2 {
            json,
            etag,
            last_modified: SystemTime::now(),
            proto: OnceLock::new(),
        }
    }

    pub fn json(&self) -> &Bytes {
        &self.json
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    pub fn proto(&self) -> Bytes {
        self.proto
            .get_or_init(|| {
                // The JSON was written from schemas already bounded in depth at admission;
                // serde's fixed recursion limit would refuse legitimately deep CRD schemas.
                let mut de = serde_json::Deserializer::from_slice(&self.json);
                de.disable_recursion_limit();
                let doc = Value::deserialize(&mut de).unwrap_or(Value::Null);
                Bytes::from(crate::discovery::openapi_v2_proto::encode(&doc))
            })
            .clone()
    }
}

/// The document, written in one pass: each v3 document is converted and serialized part
/// by part (compact JSON per path and definition) and may be dropped before the next is
/// made, so the whole document never exists as a value tree (several times its size).
#[derive(Serialize)]
struct Document<'a> {
    definitions: &'a BTreeMap<String, Box<RawValue>>,
    info: Value,
    paths: &'a BTreeMap<String, Box<RawValue>>,
    security: Value,
    #[serde(rename = "securityDefinitions")]
    security_definitions: Value,
    swagger: &'static str,
}

fn document_json<'a>(v3_docs: impl Iterator<Item = Cow<'a, Value>>) -> Vec<u8> {
    let raw = |v: &Value| {
        serde_json::value::to_raw_value(v).unwrap_or_else(|_| {
            serde_json::value::to_raw_value(&json!({})).expect("an empty object serializes")
        })
    };
    let mut paths = BTreeMap::new();
    let mut definitions = BTreeMap::new();
    for doc in v3_docs {
        for (name, schema) in doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            // Every group-version carries the shared definitions (ObjectMeta …); one copy.
            if !definitions.contains_key(name) {
                definitions.insert(name.clone(), raw(&definition(name, schema)));
            }
        }
        for (path, item) in doc
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            paths.insert(path.clone(), raw(&path_item(path, item)));
        }
    }
    let doc = Document {
        definitions: &definitions,
        info: json!({
            "title": "Kubernetes",
            "version": format!("v{}.{}.0", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR),
        }),
        paths: &paths,
        security: json!([{"BearerToken": []}]),
        security_definitions: json!({"BearerToken": {
            "type": "apiKey", "name": "authorization", "in": "header",
            "description": "Bearer Token authentication",
        }}),
        swagger: "2.0",
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn definition(name: &str, schema: &Value) -> Value {
    // Upstream's v2 spells IntOrString as a formatted string (v3 leaves it untyped).
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString" {
        return json!({
            "description": schema.get("description").cloned().unwrap_or(json!("")),
            "type": "string",
            "format": "int-or-string",
        });
    }
    schema_v2(schema)
}

/// The keys a Swagger 2.0 schema may carry (gnostic refuses others; `x-` are extensions).
const V2_SCHEMA_KEYS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "properties",
    "readOnly",
    "example",
];

/// A v3 schema as upstream publishes it in v2 (apiextensions' ToStructuralOpenAPIV2 for
/// custom resources): references re-pointed, a lone `allOf` reference flattened, junctors
/// and `nullable` dropped, and untyped what kubectl's v2 parser cannot take typed (nullable
/// or unknown-preserving values, arrays without items, int-or-string).
pub fn schema_v2(v: &Value) -> Value {
    let Value::Object(src) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    if let Some(Value::String(r)) = src.get("$ref") {
        out.insert("$ref".into(), json!(r.replace(V3_REF, V2_REF)));
    } else if let Some(Value::Array(all)) = src.get("allOf") {
        // `{allOf: [{$ref}], description}` is how v3 gives a reference its own description.
        if let [only] = all.as_slice() {
            if let Some(Value::String(r)) = only.get("$ref") {
                out.insert("$ref".into(), json!(r.replace(V3_REF, V2_REF)));
            }
        }
    }
    for (k, val) in src {
        if k == "$ref" || out.contains_key(k) {
            continue;
        }
        if !(k.starts_with("x-") || V2_SCHEMA_KEYS.contains(&k.as_str())) {
            continue;
        }
        let converted = match k.as_str() {
            "properties" => Value::Object(
                val.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), schema_v2(s)))
                    .collect(),
            ),
            "items" => match val {
                Value::Array(a) => Value::Array(a.iter().map(schema_v2).collect()),
                other => schema_v2(other),
            },
            "additionalProperties" => schema_v2(val),
            _ => val.clone(),
        };
        out.insert(k.clone(), converted);
    }
    let flag = |k: &str| src.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("nullable") || flag("x-kubernetes-preserve-unknown-fields") {
        out.remove("type");
        out.remove("items");
        out.remove("properties");
    }
    if flag("x-kubernetes-int-or-string") {
        out.remove("type");
    }
    if out.get("type").and_then(Value::as_str) == Some("array") && !out.contains_key("items") {
        out.remove("type");
    }
    // A nullable property is not required in v2, which cannot say "present but null".
    let nullable: Vec<&String> = src
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.get("nullable").and_then(Value::as_bool) == Some(true))
        .map(|(name, _)| name)
        .collect();
    if !nullable.is_empty() {
        if let Some(Value::Array(req)) = out.get_mut("required") {
            req.retain(|r| !r.as_str().is_some_and(|r| nullable.iter().any(|n| *n == r)));
        }
    }
    Value::Object(out)
}

fn parameter_v2(p: &Value) -> Value {
    let mut out = Map::new();
    for k in ["name", "in", "description", "required"] {
        if let Some(v) = p.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    for k in ["type", "uniqueItems"] {
        if let Some(v) = p.pointer(&format!("/schema/{k}")) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn operation_v2(tag: &str, op: &Value) -> Value {
    let mut out = Map::new();
    let reads_json = json!(["application/json", "application/yaml"]);
    out.insert("consumes".into(), json!(["*/*"]));
    out.insert("produces".into(), reads_json);
    out.insert("schemes".into(), json!(["https"]));
    out.insert("tags".into(), json!([tag]));
    if let Some(id) = op.get("operationId") {
        out.insert("operationId".into(), id.clone());
    }
    let mut params: Vec<Value> = Vec::new();
    if let Some(content) = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
    {
        out.insert(
            "consumes".into(),
            Value::Array(content.keys().map(|k| json!(k)).collect()),
        );
        let schema = content
            .values()
            .find_map(|c| c.get("schema"))
            .map(schema_v2)
            .unwrap_or(json!({"type": "object"}));
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    params.extend(
        op.get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(parameter_v2),
    );
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    let responses: Map<String, Value> = op
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(code, r)| {
            let mut resp =
                json!({"description": r.get("description").cloned().unwrap_or(json!(""))});
            if let Some(s) = r
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().find_map(|m| m.get("schema")))
            {
                resp["schema"] = schema_v2(s);
            }
            (code.clone(), resp)
        })
        .collect();
    out.insert("responses".into(), Value::Object(responses));
    for (k, v) in op.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Upstream's operation tag: `core_v1`, `apps_v1`, `stableExampleCom_v1`.
fn tag_of(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("api"), Some(v), _) => format!("core_{v}"),
        (Some("apis"), Some(group), Some(v)) => {
            let mut words = group.split('.');
            let mut camel = words.next().unwrap_or("").to_string();
            for w in words {
                let mut cs = w.chars();
                if let Some(first) = cs.next() {
                    camel.extend(first.to_uppercase());
                    camel.push_str(cs.as_str());
                }
            }
            format!("{camel}_{v}")
        }
        _ => String::new(),
    }
}

fn path_item(path: &str, item: &Value) -> Value {
    let tag = tag_of(path);
    let mut out = Map::new();
    for (k, v) in item.as_object().into_iter().flatten() {
        match k.as_str() {
            "get" | "put" | "post" | "delete" | "patch" => {
                out.insert(k.clone(), operation_v2(&tag, v));
            }
            "parameters" => {
                out.insert(
                    k.clone(),
                    Value::Array(
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .map(parameter_v2)
                            .collect(),
                    ),
                );
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Which representation a client's `Accept` asks for (kube-openapi's negotiation: clauses
/// by quality, first offered type a clause matches), or None for a 406.
fn negotiate(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("*/*");
    let mut clauses: Vec<(f32, u8, String)> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let specificity = match media.as_str() {
                "*/*" => 0,
                m if m.ends_with("/*") => 1,
                _ => 2,
            };
            Some((q, specificity, media))
        })
        .filter(|(q, _, _)| *q > 0.0)
        .collect();
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let offered = [JSON, PROTOBUF_DEPRECATED, PROTOBUF];
    for (_, _, media) in &clauses {
        let (ctype, csub) = media.split_once('/').unwrap_or((media.as_str(), ""));
        for o in offered {
            let (otype, osub) = o.split_once('/').unwrap_or((o, ""));
            if (ctype == otype || ctype == "*") && (csub == osub || csub == "*") {
                return Some(if o == PROTOBUF_DEPRECATED {
                    PROTOBUF
                } else {
                    o
                });
            }
        }
    }
    None
}

/// `If-None-Match` holding this ETag (or `*`), compared weakly as Go's ServeContent does.
fn etag_matches(headers: &HeaderMap, quoted: &str) -> Option<bool> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    Some(
        inm.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == quoted),
    )
}

fn http_date(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn not_modified_since(headers: &HeaderMap, modified: SystemTime) -> bool {
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
    else {
        return false;
    };
    let modified: chrono::DateTime<chrono::Utc> = modified.into();
    modified.timestamp() <= since.timestamp()
}

/// GET `/openapi/v2`.
pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(content_type) = negotiate(accept) else {
        return (StatusCode::NOT_ACCEPTABLE, [(header::VARY, "Accept")]).into_response();
    };
    let openapi = state.openapi();
    // Building walks every schema once: off the reactor, as large bodies are.
    let spec = match tokio::task::spawn_blocking(move || openapi.v2()).await {
        Ok(spec) => spec,
        Err(e) => {
            tracing::error!(error = %e, "building /openapi/v2 failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    respond(&spec, content_type, &headers).await
}

async fn respond(spec: &Arc<SpecV2>, content_type: &'static str, headers: &HeaderMap) -> Response {
    let quoted = format!("\"{}\"", spec.etag());
    let mut common = HeaderMap::new();
    common.insert(header::VARY, HeaderValue::from_static("Accept"));
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        common.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(spec.last_modified)) {
        common.insert(header::LAST_MODIFIED, v);
    }
    let unchanged = match etag_matches(headers, &quoted) {
        Some(matched) => matched,
        None => not_modified_since(headers, spec.last_modified),
    };
    if unchanged {
        common.remove(header::CONTENT_TYPE);
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let body = if content_type == JSON {
        spec.json().clone()
    } else {
        let spec = spec.clone();
        match tokio::task::spawn_blocking(move || spec.proto()).await {
            Ok(b) => b,
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    };
    (StatusCode::OK, common, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_as_kube_openapi_does() {
        assert_eq!(negotiate(None), Some(JSON));
        assert_eq!(negotiate(Some("*/*")), Some(JSON));
        assert_eq!(negotiate(Some(PROTOBUF_DEPRECATED)), Some(PROTOBUF));
        assert_eq!(negotiate(Some(PROTOBUF)), Some(PROTOBUF));
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/com.github.proto-openapi.spec.v2.v1.0+protobuf")),
            Some(PROTOBUF)
        );
        assert_eq!(negotiate(Some("text/html")), None);
    }

    #[test]
    fn v3_shapes_become_v2() {
        let v3 = json!({
            "type": "object",
            "required": ["a", "b"],
            "properties": {
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.X"}], "description": "d"},
                "a": {"type": "string", "nullable": true},
                "b": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "c": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"z": {"type": "string"}}},
            },
        });
        let v2 = schema_v2(&v3);
        assert_eq!(
            v2["properties"]["metadata"],
            json!({"$ref": "#/definitions/io.k8s.X", "description": "d"})
        );
        assert_eq!(v2["properties"]["a"], json!({}));
        assert_eq!(
            v2["properties"]["b"],
            json!({"x-kubernetes-int-or-string": true})
        );
        assert_eq!(
            v2["properties"]["c"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(v2["required"], json!(["b"]));
    }

    #[test]
    fn tags_name_the_group_version() {
        assert_eq!(tag_of("/api/v1/pods"), "core_v1");
        assert_eq!(
            tag_of("/apis/stable.example.com/v1/crontabs"),
            "stableExampleCom_v1"
        );
    }
}
