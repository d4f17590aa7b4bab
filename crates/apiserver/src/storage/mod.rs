//! Storage access: keys of objects in the store, stored bytes to objects and back, and the
//! resourceVersion spliced into stored bytes without a parse.

pub mod encryption;
pub mod raw_object;

use axum::http::StatusCode;
use bytes::Bytes;
use capstan_store::{KeyValue, StoreExt};
use serde_json::{json, Value};

use crate::object::set_meta;
use crate::status::ApiError;
use crate::types::registry::ResourceType;
use crate::AppState;

pub fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if rt.namespaced => format!("{}{}/{}", rt.key_prefix(), ns, name),
        _ => format!("{}{}", rt.key_prefix(), name),
    }
}

/// A stored object as the API shows it: resourceVersion is the key's mod revision.
pub fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = crate::limits::parse_stored(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
    set_meta(
        &mut obj,
        "resourceVersion",
        json!(kv.mod_revision.to_string()),
    );
    Ok(obj)
}

/// A stored object as a given version serves it: custom resources are stored in their
/// storage version (`None` conversion rewrites apiVersion) and defaulted on read.
pub fn present(rt: &ResourceType, obj: &mut Value) {
    if let Some(custom) = &rt.custom {
        if obj.is_object() {
            obj["apiVersion"] = json!(rt.api_version());
        }
        if let Some(schema) = &custom.schema {
            // Data stored under another version's (or an older) schema reads as this one's.
            capstan_schema::prune(schema, obj);
            capstan_schema::apply_defaults(schema, obj);
        }
    }
}

/// `decode_stored`, then `present` for the version `rt` serves.
pub fn decode_for(rt: &ResourceType, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj = decode_stored(kv)?;
    present(rt, &mut obj);
    Ok(obj)
}

/// The bytes to store for `obj`; a custom resource is stored as its storage version.
pub fn encode_as_stored(rt: &ResourceType, obj: &Value) -> Result<Bytes, ApiError> {
    match &rt.custom {
        Some(c) if c.storage_version != rt.version => {
            let mut o = obj.clone();
            o["apiVersion"] = json!(c.storage_api_version(&rt.group));
            encode_for_store(&o)
        }
        _ => encode_for_store(obj),
    }
}

pub fn encode_for_store(obj: &Value) -> Result<Bytes, ApiError> {
    let mut bytes =
        serde_json::to_vec(&WithoutRv(obj)).map_err(|e| ApiError::internal(e.to_string()))?;
    // The store keeps these bytes for the object's life (the latest-value map, watch
    // events): without this a 4.3 KB pod sat in the 8 KB the growing buffer had reached.
    if bytes.capacity() - bytes.len() > bytes.len() / 16 {
        bytes.shrink_to_fit();
    }
    if bytes.len() > crate::limits::MAX_STORED_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "the object would be {} bytes, larger than the {} byte limit on a stored object",
                bytes.len(),
                crate::limits::MAX_STORED_BYTES
            ),
        ));
    }
    Ok(Bytes::from(bytes))
}

/// An object serialised as stored: without `metadata.resourceVersion` (the store's revision
/// is the version), written straight from the borrowed value instead of a trimmed deep copy.
struct WithoutRv<'a>(&'a Value);

/// A `metadata` map without its `resourceVersion`.
struct MetaWithoutRv<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutRv<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    map.serialize_entry(k, &MetaWithoutRv(meta))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

impl serde::Serialize for MetaWithoutRv<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let rv = self.0.contains_key("resourceVersion") as usize;
        let mut map = s.serialize_map(Some(self.0.len() - rv))?;
        for (k, v) in self.0 {
            if k != "resourceVersion" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Read one object (None if absent) with its mod revision.
pub async fn read(
    state: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<(Value, i64)>, ApiError> {
    match state.store.get(key(rt, ns, name).as_bytes()).await? {
        Some(kv) => Ok(Some((decode_for(rt, &kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    #[test]
    fn stored_bytes_drop_only_the_resource_version() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "7", "labels": {"resourceVersion": "x"}},
            "data": {"resourceVersion": "kept", "k": "v".repeat(3000)}});
        let bytes = encode_for_store(&obj).expect("encodes");
        let mut want = obj.clone();
        want["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("resourceVersion");
        assert_eq!(bytes, Bytes::from(serde_json::to_vec(&want).expect("json")));
        // Without metadata, or not an object at all, it is plain JSON.
        assert_eq!(
            encode_for_store(&json!({"kind": "X"})).expect("encodes"),
            &b"{\"kind\":\"X\"}"[..]
        );
        assert_eq!(encode_for_store(&json!([1])).expect("encodes"), &b"[1]"[..]);
    }
}
