//! The server-side apply endpoint (`PATCH` with `application/apply-patch+yaml`): checks the
//! configuration against the URL, applies it (patch::apply) and admits the result as a write.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::object;
use crate::patch::apply::{apply_config, decode, display, owned_through};
use crate::patch::managed_fields::{fields_of, write_entries, Entry, FieldSet, Path};
use crate::patch::strategic_merge::Cursor;
use crate::rest::{self, is_dry_run, json_response};
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

/// The 409 upstream answers when applied values collide with other managers' fields.
fn conflict_error(t: &Target, name: &str, conflicts: &[(String, String, Path)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, av, p)| format!("conflict with {m:?} using {av}: {}", display(p)))
        .collect();
    let n = conflicts.len();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, av, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?} using {av}"), "field": display(p)}))
        .collect();
    ApiError::new(StatusCode::CONFLICT, "Conflict", message).with_details(json!({
        "name": name, "group": t.rt.group, "kind": t.rt.plural, "causes": causes,
    }))
}

pub async fn apply(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))?;
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("PATCH apply requests require a fieldManager"))?;
    let force = query.get("force").is_some_and(|v| v == "true" || v == "1");
    let mut config = decode(body)?;
    rest::check_shape(&config)?;
    let mode = crate::encoding::field_validation::mode(query)?;
    let av = t.rt.api_version();
    for (field, want) in [("apiVersion", av.as_str()), ("kind", t.rt.kind.as_str())] {
        match config.get(field).and_then(Value::as_str) {
            Some(x) if x == want => {}
            Some(x) => {
                return Err(ApiError::bad_request(format!(
                "the {field} of the apply configuration ({x}) does not match the endpoint ({want})"
            )))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "{field} must be set in the apply configuration"
                )))
            }
        }
    }
    match object::meta_str(&config, "name") {
        Some(n) if n == name => {}
        None | Some("") => object::set_meta(&mut config, "name", json!(name)),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let openapi = state.openapi();
    let schema = openapi
        .schema_for(&t.rt.group, &t.rt.version, &t.rt.kind)
        .map(|(root, defs)| Cursor::new(root, defs));
    let subresource = t.subresource.clone().unwrap_or_default();
    let applied = owned_through(fields_of(&config, schema), &t.rt, &subresource);
    let entry = |fields: FieldSet| Entry {
        manager: manager.clone(),
        operation: "Apply".into(),
        api_version: av.clone(),
        time: object::now_rfc3339(),
        subresource: subresource.clone(),
        fields,
    };
    let quiet = Target {
        manager: None,
        ..t.clone()
    };
    let dry_run = is_dry_run(query);
    for _ in 0..8 {
        let live = rest::read(state, &t.rt, t.namespace.as_deref(), &name).await?;
        let Some((live, live_rev)) = live else {
            if t.subresource.is_some() {
                return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &name));
            }
            // Applying to nothing creates it, owned by this manager.
            let mut obj = config.clone();
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            crate::encoding::field_validation::check(state, &t.rt, &mut obj, mode)?;
            write_entries(&mut obj, &[entry(applied.clone())]);
            let (created, _) = rest::create_object(state, &quiet, obj, dry_run).await?;
            return Ok(json_response(StatusCode::CREATED, &created));
        };
        if let Some(rv) = object::meta_str(&config, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if rv != live_rev.to_string() {
                return Err(ApiError::conflict(&t.rt.group, &t.rt.plural, &name, "the object has been modified; please apply your changes to the latest version and try again"));
            }
        }
        let mut result = match apply_config(
            &live,
            &config,
            &applied,
            &entry(applied.clone()),
            force,
            schema,
        ) {
            Ok(r) => r,
            Err(conflicts) => return Err(conflict_error(t, &name, &conflicts)),
        };
        crate::encoding::field_validation::check(state, &t.rt, &mut result, mode)?;
        let expected = live_rev;
        match rest::update_object(state, &quiet, live, live_rev, result, expected, dry_run).await {
            Ok(obj) => return Ok(json_response(StatusCode::OK, &obj)),
            Err(e)
                if e.code == StatusCode::CONFLICT
                    && e.reason == "Conflict"
                    && object::meta_str(&config, "resourceVersion").is_none() =>
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
        "the object kept changing while being applied; try again",
    ))
}
