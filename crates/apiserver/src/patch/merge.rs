//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch,
//! applied to the stored object and then admitted like an update.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::object;
use crate::patch::strategic_merge;
use crate::rest::{self, is_dry_run, json_response};
use crate::routing::Target;
use crate::status::ApiError;
use crate::AppState;

enum Kind {
    Json,
    Merge,
    Strategic,
}

fn kind(content_type: &str, custom: bool) -> Result<Kind, ApiError> {
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

fn decode(body: &[u8]) -> Result<Value, ApiError> {
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

fn apply_parsed(
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

pub async fn patch(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if content_type.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml" {
        return crate::patch::apply::apply(state, t, query, body).await;
    }
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))?;
    let kind = kind(content_type, t.rt.custom.is_some())?;
    let mode = crate::encoding::field_validation::mode(query)?;
    let duplicate_warnings =
        crate::encoding::field_validation::duplicates(body, content_type, mode)?;
    let patch = decode(body)?;
    // Retry on conflict unless the patch itself pins a resourceVersion.
    for _ in 0..8 {
        let (old, old_rev) = rest::read_existing(state, t, &name).await?;
        let mut doc = old.clone();
        let openapi = state.openapi();
        let schema = openapi
            .schema_for(&t.rt.group, &t.rt.version, &t.rt.kind)
            .map(|(root, defs)| strategic_merge::Cursor::new(root, defs));
        apply_parsed(&mut doc, &kind, &patch, schema)?;
        rest::check_shape(&doc)?;
        let mut warnings = duplicate_warnings.clone();
        warnings.extend(crate::encoding::field_validation::check(
            state, &t.rt, &mut doc, mode,
        )?);
        let pinned = object::meta_str(&doc, "resourceVersion")
            .filter(|rv| *rv != old_rev.to_string())
            .map(String::from);
        let expected = match &pinned {
            Some(rv) => rv.parse::<i64>().unwrap_or(-1),
            None => old_rev,
        };
        if object::name(&doc) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&doc)
            )));
        }
        match rest::update_object(state, t, old, old_rev, doc, expected, is_dry_run(query)).await {
            Ok(obj) => {
                return Ok(crate::encoding::field_validation::with_warnings(
                    json_response(StatusCode::OK, &obj),
                    &warnings,
                ))
            }
            Err(e)
                if e.code == StatusCode::CONFLICT && pinned.is_none() && e.reason == "Conflict" =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &t.rt.group,
        &t.rt.plural,
        &name,
        "the object kept changing while being patched; try again",
    ))
}
