//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` envelope
//! around a `runtime.Unknown`, decoded with k8s-pb's messages and turned into the same JSON
//! the rest of the server speaks. `kubectl create <generator>` sends nothing else.

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "the body of the request could not be decoded as protobuf: {e}"
    ))
}

fn strings(m: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn bytes_b64(m: &std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect(),
    )
}

fn put(obj: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if !empty {
        obj.insert(k.to_string(), v);
    }
}

fn object_meta(m: Option<&meta::ObjectMeta>) -> Value {
    let Some(m) = m else { return json!({}) };
    let mut o = Map::new();
    put(&mut o, "name", json!(m.name));
    put(&mut o, "generateName", json!(m.generate_name));
    put(&mut o, "namespace", json!(m.namespace));
    put(&mut o, "resourceVersion", json!(m.resource_version));
    put(&mut o, "uid", json!(m.uid));
    put(&mut o, "labels", strings(&m.labels));
    put(&mut o, "annotations", strings(&m.annotations));
    put(&mut o, "finalizers", json!(m.finalizers));
    let owners: Vec<Value> = m
        .owner_references
        .iter()
        .map(|r| {
            let mut o = Map::new();
            put(&mut o, "apiVersion", json!(r.api_version));
            put(&mut o, "kind", json!(r.kind));
            put(&mut o, "name", json!(r.name));
            put(&mut o, "uid", json!(r.uid));
            put(&mut o, "controller", json!(r.controller));
            put(&mut o, "blockOwnerDeletion", json!(r.block_owner_deletion));
            Value::Object(o)
        })
        .collect();
    put(&mut o, "ownerReferences", json!(owners));
    Value::Object(o)
}

/// Decode a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = Unknown::decode(inner).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(api_version));
    o.insert("kind".into(), json!(kind));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => {
            let m = core::ConfigMap::decode(raw.as_slice()).map_err(bad)?;
            o.insert("metadata".into(), object_meta(m.metadata.as_ref()));
            put(&mut o, "data", strings(&m.data));
            put(&mut o, "binaryData", bytes_b64(&m.binary_data));
            put(&mut o, "immutable", json!(m.immutable));
        }
        ("v1", "Secret") => {
            let m = core::Secret::decode(raw.as_slice()).map_err(bad)?;
            o.insert("metadata".into(), object_meta(m.metadata.as_ref()));
            put(&mut o, "data", bytes_b64(&m.data));
            put(&mut o, "stringData", strings(&m.string_data));
            put(&mut o, "type", json!(m.r#type));
            put(&mut o, "immutable", json!(m.immutable));
        }
        ("v1", "Namespace") => {
            let m = core::Namespace::decode(raw.as_slice()).map_err(bad)?;
            o.insert("metadata".into(), object_meta(m.metadata.as_ref()));
            if let Some(spec) = m.spec {
                put(&mut o, "spec", json!({"finalizers": spec.finalizers}));
            }
        }
        ("v1", "ServiceAccount") => {
            let m = core::ServiceAccount::decode(raw.as_slice()).map_err(bad)?;
            o.insert("metadata".into(), object_meta(m.metadata.as_ref()));
            let names = |refs: Vec<Option<String>>| -> Value {
                json!(refs
                    .into_iter()
                    .map(|n| json!({"name": n}))
                    .collect::<Vec<_>>())
            };
            put(
                &mut o,
                "secrets",
                names(m.secrets.into_iter().map(|r| r.name).collect()),
            );
            put(
                &mut o,
                "imagePullSecrets",
                names(m.image_pull_secrets.into_iter().map(|r| r.name).collect()),
            );
            put(
                &mut o,
                "automountServiceAccountToken",
                json!(m.automount_service_account_token),
            );
        }
        _ => {
            return Err(ApiError::unsupported_media_type(&format!(
                "{CONTENT_TYPE} for {kind} ({api_version}); send application/json"
            )))
        }
    }
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

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
    fn decodes_a_secret_like_kubectl_sends_it() {
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("s".into()),
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
    fn refuses_garbage_and_unknown_kinds() {
        assert_eq!(decode(b"nope").unwrap_err().code.as_u16(), 400);
        assert_eq!(
            decode(&envelope("v1", "Pod", vec![]))
                .unwrap_err()
                .code
                .as_u16(),
            415
        );
    }
}
