//! PATCH: a patch body applied to the stored object (patch::merge), then admitted like an
//! update; retried on conflict unless the patch pins a resourceVersion.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;

use crate::object;
use crate::patch::merge::{apply_parsed, decode, kind, Kind};
use crate::patch::strategic_merge;
use crate::rest::{self, is_dry_run, json_response};
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

pub async fn patch(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if content_type.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml" {
        return crate::rest::apply::apply(state, t, query, body).await;
    }
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))?;
    let kind = kind(content_type, t.rt.custom.is_some())?;
    let mode = crate::encoding::field_validation::mode(query)?;
    let duplicate_warnings =
        crate::encoding::field_validation::duplicates(body, content_type, mode)?;
    let mut patch = decode(body)?;
    // A clean merge patch makes a clean object: walk the patch once, not the whole object
    // on every write (a pod status update walked the pod's every field).
    let clean = match kind {
        Kind::Json => false,
        Kind::Merge | Kind::Strategic => {
            let mut probe = patch.clone();
            let clean = crate::encoding::field_validation::patch_is_clean(
                state,
                &t.rt,
                &mut probe,
                matches!(kind, Kind::Strategic),
            );
            if clean {
                patch = probe;
            }
            clean
        }
    };
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
        if !clean {
            warnings.extend(crate::encoding::field_validation::check(
                state, &t.rt, &mut doc, mode,
            )?);
        }
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
