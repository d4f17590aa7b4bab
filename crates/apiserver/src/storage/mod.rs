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
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))?;
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
