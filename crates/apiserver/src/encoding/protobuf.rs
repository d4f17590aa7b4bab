//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` envelope
//! around a `runtime.Unknown`, decoded field by field with the generated table of every
//! built-in message (k8s_fields.tsv) into the same JSON the rest of the server speaks.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::encoding::k8s_fields::{normalize, table};
use crate::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
pub(crate) const MAGIC: &[u8] = b"k8s\0";
/// Nesting deeper than this is refused rather than recursed into.
pub(crate) const MAX_DEPTH: usize = 64;

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "the body of the request could not be decoded as protobuf: {e}"
    ))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// A raw field value off the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn next_field<'a>(r: &mut Reader<'a>) -> Result<(u32, Wire<'a>), String> {
    let key = r.varint()?;
    let tag = u32::try_from(key >> 3).map_err(|_| "bad tag")?;
    let w = match key & 7 {
        0 => Wire::Varint(r.varint()?),
        1 => Wire::Fixed64(u64::from_le_bytes(
            r.take(8)?.try_into().map_err(|_| "fixed64")?,
        )),
        2 => {
            let n = usize::try_from(r.varint()?).map_err(|_| "length")?;
            Wire::Bytes(r.take(n)?)
        }
        5 => Wire::Fixed32(u32::from_le_bytes(
            r.take(4)?.try_into().map_err(|_| "fixed32")?,
        )),
        t => return Err(format!("unsupported wire type {t}")),
    };
    Ok((tag, w))
}

/// JSON names of every built-in message's fields, from the types' OpenAPI definitions.
pub(crate) fn json_names() -> &'static HashMap<String, HashMap<String, String>> {
    static NAMES: OnceLock<HashMap<String, HashMap<String, String>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        // Every built-in kind's definitions, and those of the kinds clients send to
        // subresources (without them a field's JSON name would be guessed from prost's).
        let defs = crate::types::definitions::Definitions::shared();
        let mut out = HashMap::new();
        for name in defs.names() {
            let schema = defs.get(name).unwrap_or(Value::Null);
            let props: HashMap<String, String> = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().map(|k| (normalize(k), k.clone())).collect())
                .unwrap_or_default();
            out.insert(
                normalize(name.strip_prefix("io.k8s.").unwrap_or(name)),
                props,
            );
        }
        out
    })
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Value {
    match chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0)) {
        Some(t) if micro => json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        Some(t) => json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => Value::Null,
    }
}

fn scalar(kind: &str, w: &Wire) -> Value {
    match (kind, w) {
        ("string", Wire::Bytes(b)) => json!(String::from_utf8_lossy(b)),
        ("bytes", Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ("bool", Wire::Varint(v)) => json!(*v != 0),
        ("int32", Wire::Varint(v)) => json!(*v as i64 as i32),
        ("int64", Wire::Varint(v)) => json!(*v as i64),
        ("uint32" | "uint64", Wire::Varint(v)) => json!(*v),
        ("double", Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        ("float", Wire::Fixed32(v)) => json!(f32::from_bits(*v)),
        _ => Value::Null,
    }
}

/// Messages that are one JSON scalar on the wire format kubectl reads.
fn special(msg: &str, bytes: &[u8], depth: usize) -> Result<Option<Value>, String> {
    let short = msg.rsplit('.').next().unwrap_or(msg);
    let pkg_meta = msg.starts_with("apimachinery.");
    if !pkg_meta {
        return Ok(None);
    }
    let fields = decode_fields(msg, bytes, depth)?;
    let get = |k: &str| fields.get(k).cloned().unwrap_or(Value::Null);
    Ok(match short {
        "Time" | "MicroTime" => {
            let s = get("seconds").as_i64().unwrap_or(0);
            let n = get("nanos").as_i64().unwrap_or(0);
            if s == 0 && n == 0 {
                Some(Value::Null)
            } else {
                Some(rfc3339(s, n, short == "MicroTime"))
            }
        }
        "Quantity" => Some(get("string")),
        "IntOrString" => Some(if get("type").as_i64() == Some(1) {
            get("strVal")
        } else {
            json!(get("intVal").as_i64().unwrap_or(0))
        }),
        "RawExtension" | "FieldsV1" => {
            let raw = fields
                .get("raw")
                .or(fields.get("Raw"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default();
            Some(
                crate::limits::parse_request_json(&bytes, "an embedded object")
                    .map_err(|e| e.message)?
                    .unwrap_or(Value::Null),
            )
        }
        _ => return Ok(Some(Value::Object(fields))),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn value_of(kind: &str, target: &str, w: &Wire, depth: usize) -> Result<Value, String> {
    match (kind, w) {
        ("message", Wire::Bytes(b)) => decode_message(target, b, depth + 1),
        _ => Ok(scalar(kind, w)),
    }
}

fn decode_fields(msg: &str, bytes: &[u8], depth: usize) -> Result<Map<String, Value>, String> {
    if depth > MAX_DEPTH {
        return Err("message nested too deeply".into());
    }
    let fields = table().message(msg).unwrap_or(&[]);
    let names = json_names().get(&normalize(msg));
    let mut out = Map::new();
    let mut r = Reader { buf: bytes, pos: 0 };
    while !r.done() {
        let (tag, w) = next_field(&mut r)?;
        let Some(f) = fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let known = names.and_then(|n| n.get(f.norm.as_str())).cloned();
        // Go's embedded structs (`VolumeSource` in a Volume, `ProbeHandler` in a Probe …)
        // are a field in protobuf but inline in JSON: their fields join the parent's.
        if known.is_none()
            && names.is_some_and(|n| !n.is_empty())
            && f.kind == "message"
            && f.card == b'o'
        {
            if let Wire::Bytes(b) = w {
                if let Value::Object(inner) = decode_message(f.target, b, depth + 1)? {
                    out.extend(inner);
                }
            }
            continue;
        }
        let name = known.unwrap_or_else(|| lower_camel(f.name));
        match f.card {
            b'm' => {
                let Wire::Bytes(entry) = w else { continue };
                let (kt, vt) = f
                    .kind
                    .strip_prefix("map:")
                    .and_then(|k| k.split_once(','))
                    .unwrap_or(("string", "string"));
                let mut er = Reader { buf: entry, pos: 0 };
                let (mut key, mut val) = (String::new(), Value::Null);
                while !er.done() {
                    let (t, ew) = next_field(&mut er)?;
                    match t {
                        1 => {
                            key = scalar(kt, &ew)
                                .as_str()
                                .map(String::from)
                                .unwrap_or_else(|| scalar(kt, &ew).to_string())
                        }
                        2 => val = value_of(vt, f.target, &ew, depth)?,
                        _ => {}
                    }
                }
                if val.is_null() && vt == "string" {
                    val = json!("");
                }
                out.entry(name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|m| m.insert(key, val));
            }
            b'r' => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                let Some(list) = list.as_array_mut() else {
                    continue;
                };
                match (&w, f.kind) {
                    // Packed scalars.
                    (Wire::Bytes(b), k) if !matches!(k, "message" | "string" | "bytes") => {
                        let mut pr = Reader { buf: b, pos: 0 };
                        while !pr.done() {
                            let v = match k {
                                "double" => Wire::Fixed64(u64::from_le_bytes(
                                    pr.take(8)?.try_into().map_err(|_| "fixed64")?,
                                )),
                                "float" => Wire::Fixed32(u32::from_le_bytes(
                                    pr.take(4)?.try_into().map_err(|_| "fixed32")?,
                                )),
                                _ => Wire::Varint(pr.varint()?),
                            };
                            list.push(scalar(k, &v));
                        }
                    }
                    _ => list.push(value_of(f.kind, f.target, &w, depth)?),
                }
            }
            _ => {
                out.insert(name, value_of(f.kind, f.target, &w, depth)?);
            }
        }
    }
    Ok(out)
}

/// Pointer fields where zero means something (`--replicas=0`); protobuf cannot tell a
/// pointer from a plain field, so these keep a zero that other fields drop.
const ZERO_MEANS_SOMETHING: &[&str] = &[
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "terminationGracePeriodSeconds",
    "revisionHistoryLimit",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "ttlSecondsAfterFinished",
];

/// Whether a decoded field belongs in the JSON object. An empty object can only come from a
/// message field present on the wire, which Go sends for a non-nil pointer (`emptyDir: {}`
/// selects the volume type) or a struct value (which its JSON never omits): kept.
fn keep(name: &str, v: &Value) -> bool {
    matches!(v, Value::Object(_))
        || !is_empty(v)
        || (v.is_number() && ZERO_MEANS_SOMETHING.contains(&name))
}

/// Decode one message to JSON, dropping the zero values Go's `omitempty` leaves out.
fn decode_message(msg: &str, bytes: &[u8], depth: usize) -> Result<Value, String> {
    if let Some(v) = special(msg, bytes, depth)? {
        return Ok(match v {
            Value::Object(o) => Value::Object(o.into_iter().filter(|(k, v)| keep(k, v)).collect()),
            other => other,
        });
    }
    let fields = decode_fields(msg, bytes, depth)?;
    Ok(Value::Object(
        fields.into_iter().filter(|(k, v)| keep(k, v)).collect(),
    ))
}

/// The protobuf package of a group/version (`apps/v1` is `api.apps.v1`).
pub(crate) fn package(api_version: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    match group {
        "" => format!("api.core.{version}"),
        "apiextensions.k8s.io" => {
            format!("apiextensions_apiserver.pkg.apis.apiextensions.{version}")
        }
        "apiregistration.k8s.io" => {
            format!("kube_aggregator.pkg.apis.apiregistration.{version}")
        }
        "internal.apiserver.k8s.io" => format!("api.apiserverinternal.{version}"),
        g => format!("api.{}.{version}", g.split('.').next().unwrap_or(g)),
    }
}

/// Decode a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = decode_fields("apimachinery.pkg.runtime.Unknown", inner, 0).map_err(bad)?;
    let tm = unknown.get("typeMeta").cloned().unwrap_or(json!({}));
    let api_version = tm
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = tm
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // meta.k8s.io kinds (DeleteOptions) travel as `v1`: message_for knows both.
    let Some(msg) = crate::encoding::protobuf_encode::message_for(&api_version, &kind) else {
        return Err(ApiError::unsupported_media_type(&format!(
            "{CONTENT_TYPE} for {kind} ({api_version}); send application/json"
        )));
    };
    let raw = unknown.get("raw").and_then(Value::as_str).unwrap_or("");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(bad)?;
    let mut obj = decode_message(&msg, &raw, 0).map_err(bad)?;
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
        o.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn a_token_requests_bound_object_keeps_its_uid() {
        use k8s_pb::api::authentication::v1 as authn;
        let req = authn::TokenRequest {
            spec: Some(authn::TokenRequestSpec {
                bound_object_ref: Some(authn::BoundObjectReference {
                    kind: Some("Pod".into()),
                    api_version: Some("v1".into()),
                    name: Some("p".into()),
                    u_id: Some("1234".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = envelope(
            "authentication.k8s.io/v1",
            "TokenRequest",
            req.encode_to_vec(),
        );
        let v = decode(&body).unwrap();
        assert_eq!(v["spec"]["boundObjectRef"]["uid"], "1234", "{v}");
    }

    #[test]
    fn decodes_a_secret_like_kubectl_sends_it() {
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("s".into()),
                namespace: Some(String::new()),
                ..Default::default()
            }),
            data: [("k".to_string(), b"v".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn decodes_a_deployment_with_nested_pod_spec_and_special_types() {
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                creation_timestamp: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(3),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: Some("30%".into()),
                        }),
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(2),
                            str_val: Some(String::new()),
                        }),
                    }),
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta::default()),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("nginx".into()),
                            image: Some("nginx:1.25".into()),
                            ports: vec![core::ContainerPort {
                                container_port: Some(80),
                                ..Default::default()
                            }],
                            resources: Some(core::ResourceRequirements {
                                limits: [(
                                    "cpu".to_string(),
                                    k8s_pb::apimachinery::pkg::api::resource::Quantity {
                                        string: Some("500m".into()),
                                    },
                                )]
                                .into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        host_ipc: Some(true),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "web", "labels": {"app": "web"}})
        );
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(
            v["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
        assert_eq!(
            v["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": "30%", "maxUnavailable": 2})
        );
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"], json!([{"containerPort": 80}]));
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(
            v["spec"]["template"]["spec"]["hostIPC"], true,
            "acronyms keep their JSON names"
        );
        // An embedded Go struct (VolumeSource) is a field in protobuf, inline in JSON.
        let vol = core::Volume {
            name: Some("data".into()),
            volume_source: Some(core::VolumeSource {
                empty_dir: Some(core::EmptyDirVolumeSource::default()),
                config_map: None,
                ..Default::default()
            }),
        };
        let pod = core::Pod {
            spec: Some(core::PodSpec {
                volumes: vec![vol],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap();
        assert_eq!(v["spec"]["volumes"][0]["name"], "data");
        assert!(v["spec"]["volumes"][0].get("volumeSource").is_none(), "{v}");
    }

    #[test]
    fn refuses_garbage_and_unknown_kinds() {
        assert_eq!(decode(b"nope").unwrap_err().code.as_u16(), 400);
        assert_eq!(decode(b"k8s\0\xff\xff\xff").unwrap_err().code.as_u16(), 400);
        assert_eq!(
            decode(&envelope("v1", "Gadget", vec![]))
                .unwrap_err()
                .code
                .as_u16(),
            415
        );
    }
}
