//! Patch bodies: JSON patch (RFC 6902, with upstream's operation and copy bounds), JSON merge
//! patch (RFC 7386) and strategic merge patch, applied to a working copy of an object.

use axum::http::StatusCode;
use serde_json::Value;

use crate::patch::strategic_merge;
use crate::status::ApiError;

pub enum Kind {
    Json,
    Merge,
    Strategic,
}

pub fn kind(content_type: &str, custom: bool) -> Result<Kind, ApiError> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => Ok(Kind::Json),
        "application/merge-patch+json" => Ok(Kind::Merge),
        "application/strategic-merge-patch+json" if !custom => Ok(Kind::Strategic),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Apply a patch body of the given content type to `doc` (the scale subresource uses this
/// on its Scale view). `custom`: strategic merge is refused, as upstream does for CRs.
pub fn apply_to(
    doc: &mut Value,
    content_type: &str,
    body: &[u8],
    custom: bool,
) -> Result<(), ApiError> {
    let kind = kind(content_type, custom)?;
    let patch = decode(body)?;
    apply_parsed(doc, &kind, &patch, None)
}

pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    crate::limits::parse_request_json(body, "the patch")?
        .map_err(|e| ApiError::bad_request(format!("the patch could not be decoded as JSON: {e}")))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

/// RFC 6902 with upstream's bounds: at most 10,000 operations, and at most 3 MiB copied in
/// total, so that a small patch of repeated `copy` operations cannot grow the object
/// exponentially. Operations apply one at a time to the caller's working copy (which is
/// dropped on failure), so no undo step can trip over what an earlier operation did.
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
    if ops.0.len() > crate::limits::MAX_JSON_PATCH_OPS {
        return Err(invalid(format!(
            "The allowed maximum operations in a JSON patch is {}, got {}",
            crate::limits::MAX_JSON_PATCH_OPS,
            ops.0.len()
        )));
    }
    let limit = crate::limits::MAX_OBJECT_BYTES;
    let mut copied = 0usize;
    for (i, op) in ops.0.iter().enumerate() {
        if let json_patch::PatchOperation::Copy(c) = op {
            if let Some(source) = doc.pointer(c.from.as_str()) {
                copied += crate::limits::value_size(source, limit);
                if copied > limit {
                    return Err(invalid(format!(
                        "the server rejected our request due to an error in our request: \
                         operation {i} (copy from {:?}): the values copied by this patch \
                         exceed the limit of {limit} bytes",
                        c.from.as_str()
                    )));
                }
            }
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|mut e| {
            e.operation = i;
            invalid(format!(
                "the server rejected our request due to an error in our request: {e}"
            ))
        })?;
    }
    Ok(())
}

pub fn apply_parsed(
    doc: &mut Value,
    kind: &Kind,
    patch: &Value,
    schema: Option<strategic_merge::Cursor>,
) -> Result<(), ApiError> {
    match kind {
        Kind::Json => json_patch(doc, patch)?,
        Kind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(doc, patch);
        }
        Kind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge::merge(doc, patch, schema);
        }
    }
    Ok(())
}
