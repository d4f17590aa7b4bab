//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch,
//! applied to the stored object and then admitted like an update.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use crate::object;
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

/// Strategic merge for the types served today: their lists carry no merge keys, so it is
/// a merge patch plus the directives kubectl may send (`$patch`, `$retainKeys`,
/// `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if p.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Null;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = p.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Value::Array(del)) = (t.get_mut(field), v) {
                have.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else if v.is_object() {
            let entry = t.entry(k.clone()).or_insert(Value::Null);
            strategic_merge(entry, v);
            if entry.is_null() {
                t.remove(k);
            }
        } else {
            t.insert(k.clone(), v.clone());
        }
    }
    if let Some(keep) = retain {
        t.retain(|k, _| keep.contains(k));
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
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the patch could not be decoded as JSON: {e}"))
    })?;
    apply_parsed(doc, &kind, &patch)
}

fn apply_parsed(doc: &mut Value, kind: &Kind, patch: &Value) -> Result<(), ApiError> {
    match kind {
        Kind::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            json_patch::patch(doc, &p).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
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
            strategic_merge(doc, patch);
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
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))?;
    let kind = kind(content_type, t.rt.custom.is_some())?;
    let mode = crate::field_validation::mode(query)?;
    let duplicate_warnings = crate::field_validation::duplicates(body, content_type, mode)?;
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the patch could not be decoded as JSON: {e}"))
    })?;
    // Retry on conflict unless the patch itself pins a resourceVersion.
    for _ in 0..8 {
        let Some((old, old_rev)) = rest::read(state, &t.rt, t.namespace.as_deref(), &name).await?
        else {
            return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &name));
        };
        let mut doc = old.clone();
        apply_parsed(&mut doc, &kind, &patch)?;
        rest::check_shape(&doc)?;
        let mut warnings = duplicate_warnings.clone();
        warnings.extend(crate::field_validation::check(
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
                return Ok(crate::field_validation::with_warnings(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_directives() {
        let mut doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        strategic_merge(
            &mut doc,
            &json!({"data": {"a": null, "c": "3"}, "metadata": {"labels": {"$patch": "replace", "z": "w"}}}),
        );
        assert_eq!(
            doc,
            json!({"data": {"b": "2", "c": "3"}, "metadata": {"labels": {"z": "w"}}})
        );
        let mut doc = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": 1, "y": 2}});
        strategic_merge(
            &mut doc,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}, "spec": {"$retainKeys": ["y"], "y": 3}}),
        );
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"y": 3}})
        );
    }
}
