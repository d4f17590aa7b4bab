//! What decoding into the typed object does upstream: fields the schema does not know are
//! dropped and reported per `fieldValidation` (400 Strict, `Warning` header Warn, or not at
//! all), values of the wrong type are a 400, and quantities are written back canonical.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::status::ApiError;
use crate::types::quantity::{Quantity, SYNTAX_ERROR};
use crate::types::registry::ResourceType;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Warn,
    Ignore,
}

pub fn mode(query: &HashMap<String, String>) -> Result<Mode, ApiError> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(Mode::Warn),
        Some("Strict") => Ok(Mode::Strict),
        Some("Ignore") => Ok(Mode::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Strict\" or \"Warn\", got {other:?}"
        ))),
    }
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The schema behind `$ref`s and single `allOf`s, and whether it is a Quantity.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> (&'a Value, bool) {
    let mut s = schema;
    let mut quantity = false;
    for _ in 0..8 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or("");
            quantity |= name == QUANTITY;
            match defs.get(name) {
                Some(d) => s = d,
                None => return (s, quantity),
            }
        } else if let Some(first) = s
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            s = first;
        } else {
            return (s, quantity);
        }
    }
    (s, quantity)
}

/// `directives`: the value is a strategic merge patch, whose `$`-keys (`$patch`,
/// `$setElementOrder/…`, `$retainKeys`, `$deleteFromPrimitiveList/…`) are not fields.
fn walk(
    schema: &Value,
    defs: &Map<String, Value>,
    value: &mut Value,
    path: &str,
    directives: bool,
    unknown: &mut Vec<String>,
    wrong: &mut Vec<String>,
) {
    let (schema, is_quantity) = resolve(schema, defs);
    if is_quantity {
        // Decoding a Quantity parses it; encoding writes the canonical form back.
        let parsed = match value {
            Value::Null => return,
            Value::String(t) => Quantity::parse(t),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        };
        match parsed {
            Some(q) => *value = Value::String(q.canonical()),
            None => wrong.push(format!("{path}: {SYNTAX_ERROR}")),
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    // An object or list where the type has the other shape cannot be decoded at all (what
    // upstream's JSON decoding refuses); everything after relies on the shape.
    let want = schema.get("type").and_then(Value::as_str);
    let got = match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    };
    // Free-form JSON (`default`, RawExtension) is typed object without properties: any
    // shape goes there.
    let structured = match want {
        Some("object") => {
            schema.get("properties").is_some() || schema.get("additionalProperties").is_some()
        }
        Some("array") => schema.get("items").is_some(),
        _ => false,
    };
    if structured && want != Some(got) && got != "null" {
        let field = if path.is_empty() { "the object" } else { path };
        wrong.push(format!(
            "cannot unmarshal {got} into field {field} of type {}",
            want.unwrap_or("")
        ));
        return;
    }
    if let Some((what, go_type)) = scalar_mismatch(schema, want, value) {
        let field = if path.is_empty() { "the object" } else { path };
        wrong.push(format!(
            "cannot unmarshal {what} into field {field} of type {go_type}"
        ));
        return;
    }
    match value {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if props.is_none() && additional.is_none() {
                return; // free-form (e.g. FieldsV1, RawExtension)
            }
            let keys: Vec<String> = obj.keys().cloned().collect();
            for k in keys {
                if directives && k.starts_with('$') {
                    continue;
                }
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let child_schema = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(Value::Object(_)) => additional,
                    Some(Value::Bool(true)) => None,
                    _ => None,
                });
                match child_schema {
                    Some(cs) => {
                        if let Some(v) = obj.get_mut(&k) {
                            walk(cs, defs, v, &child_path, directives, unknown, wrong);
                        }
                    }
                    None if additional == Some(&Value::Bool(true)) => {}
                    None => {
                        obj.remove(&k);
                        unknown.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(
                        item_schema,
                        defs,
                        v,
                        &format!("{path}[{i}]"),
                        directives,
                        unknown,
                        wrong,
                    );
                }
            }
        }
        _ => {}
    }
}

/// A scalar a typed decode would refuse ("string ... of type int32"): integers that are
/// not whole or overflow their format, and strings, numbers and booleans in one another's
/// place; an IntOrString takes a string or an int32. `null` is always accepted (it leaves
/// the field unset). Quantities are handled before this, by parsing them.
fn scalar_mismatch(
    schema: &Value,
    want: Option<&str>,
    value: &Value,
) -> Option<(String, &'static str)> {
    if value.is_null() {
        return None;
    }
    // IntOrString (Quantity never gets here): a string, or a number that is an int32.
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return match value {
            Value::String(_) => None,
            Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => None,
            Value::Number(n) => Some((format!("number {n}"), "int32")),
            Value::Bool(_) => Some(("bool".into(), "int32")),
            Value::Array(_) => Some(("array".into(), "int32")),
            Value::Object(_) => Some(("object".into(), "int32")),
            Value::Null => None,
        };
    }
    let format = schema.get("format").and_then(Value::as_str);
    let go_type = match (want?, format) {
        ("integer", Some("int32")) => "int32",
        ("integer", _) => "int64",
        ("number", _) => "float64",
        ("boolean", _) => "bool",
        ("string", _) => "string",
        _ => return None,
    };
    let shape = match value {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => return None,
    };
    let fits = match (go_type, value) {
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        ("int64", Value::Number(n)) => n.as_i64().is_some(),
        ("float64", Value::Number(_)) => true,
        ("bool", Value::Bool(_)) => true,
        ("string", Value::String(_)) => true,
        _ => false,
    };
    if fits {
        return None;
    }
    // Go names the offending number itself ("number 1.5"), not just its kind.
    let what = match value {
        Value::Number(n) => format!("number {n}"),
        _ => shape.to_string(),
    };
    Some((what, go_type))
}

/// Problems found: a 400 under Strict, warnings under Warn, nothing under Ignore.
fn verdict(messages: Vec<String>, mode: Mode) -> Result<Vec<String>, ApiError> {
    match mode {
        Mode::Strict if !messages.is_empty() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("strict decoding error: {}", messages.join(", ")),
        )),
        Mode::Warn => Ok(messages),
        _ => Ok(vec![]),
    }
}

/// Whether a merge or strategic merge patch of a built-in type names only fields the type
/// has, with values of their types (its quantities are made canonical in place). Then so
/// does what it makes of a stored object (which was checked when written: its fields are
/// the old ones and the patch's), and `check` need not walk the whole result. Anything
/// else — an unknown field, a wrong type, a type without a schema — says no, and `check`
/// on the result finds the exact fields to report, with their paths in the result.
pub fn patch_is_clean(
    state: &AppState,
    rt: &ResourceType,
    patch: &mut Value,
    strategic: bool,
) -> bool {
    if rt.custom.is_some() || !patch.is_object() {
        return false;
    }
    let openapi = state.openapi();
    let Some((schema, defs)) = openapi.schema_for(&rt.group, &rt.version, &rt.kind) else {
        return false;
    };
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    walk(schema, defs, patch, "", strategic, &mut unknown, &mut wrong);
    unknown.is_empty() && wrong.is_empty()
}

/// Drop unknown fields from `obj`; fail (Strict) or return the warnings to send.
pub fn check(
    state: &AppState,
    rt: &ResourceType,
    obj: &mut Value,
    mode: Mode,
) -> Result<Vec<String>, ApiError> {
    if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.clone()) {
        // Custom resources are pruned by their structural schema, whatever the mode.
        let pruned = capstan_schema::prune(&schema, obj);
        return verdict(
            pruned
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect(),
            mode,
        );
    }
    let openapi = state.openapi();
    let Some((schema, defs)) = openapi.schema_for(&rt.group, &rt.version, &rt.kind) else {
        return Ok(vec![]);
    };
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    walk(schema, defs, obj, "", false, &mut unknown, &mut wrong);
    if !wrong.is_empty() {
        // Whatever fieldValidation says: this body cannot be an object of the type.
        return Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {}",
            rt.kind,
            rt.version,
            rt.kind,
            wrong.join(", ")
        )));
    }
    verdict(
        unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect(),
        mode,
    )
}

/// Upstream's warning recorder (k8s.io/apiserver/pkg/endpoints/filters/warning.go): each
/// distinct text once; past 4096 runes in total every text is cut to 256 runes, and once
/// the cut texts reach 4096 runes later ones are dropped. It lives in the response's
/// extensions so warnings added at several layers share one budget.
#[derive(Debug, Clone, Default)]
struct WarningRecorder {
    recorded: std::collections::HashSet<String>,
    ordered: Vec<String>,
    written: usize,
    truncating: bool,
}

const TRUNCATE_AT_TOTAL_RUNES: usize = 4 * 1024;
const TRUNCATE_ITEM_RUNES: usize = 256;

/// RFC 7234 `299 - "text"`; texts a header cannot carry are skipped, as upstream's
/// NewWarningHeader refuses control characters.
fn warning_header(text: &str) -> Option<HeaderValue> {
    if text.chars().any(char::is_control) {
        return None;
    }
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_bytes(format!("299 - \"{escaped}\"").as_bytes()).ok()
}

fn cut(text: &str) -> (&str, usize) {
    match text.char_indices().nth(TRUNCATE_ITEM_RUNES) {
        Some((at, _)) => (&text[..at], TRUNCATE_ITEM_RUNES),
        None => (text, text.chars().count()),
    }
}

impl WarningRecorder {
    fn add(&mut self, headers: &mut axum::http::HeaderMap, text: &str) {
        if text.is_empty() || (self.truncating && self.written >= TRUNCATE_AT_TOTAL_RUNES) {
            return;
        }
        if !self.recorded.insert(text.to_string()) {
            return;
        }
        self.ordered.push(text.to_string());
        let (shown, runes) = if self.truncating {
            cut(text)
        } else {
            (text, text.chars().count())
        };
        let Some(header) = warning_header(shown) else {
            return;
        };
        if self.written + runes <= TRUNCATE_AT_TOTAL_RUNES || self.truncating {
            self.written += runes;
            headers.append("warning", header);
            return;
        }
        // Over the budget: start truncating and replay everything so far, cut.
        self.truncating = true;
        self.written = 0;
        headers.remove("warning");
        tracing::warn!("exceeded max warning header size, truncating");
        for w in &self.ordered {
            let (shown, runes) = cut(w);
            if let Some(h) = warning_header(shown) {
                self.written += runes;
                headers.append("warning", h);
            }
        }
    }
}

/// Attach warnings as `Warning: 299 - "..."` headers through the response's recorder.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    if warnings.is_empty() {
        return resp;
    }
    let mut recorder = resp
        .extensions_mut()
        .remove::<WarningRecorder>()
        .unwrap_or_default();
    for w in warnings {
        recorder.add(resp.headers_mut(), w);
    }
    resp.extensions_mut().insert(recorder);
    resp
}

/// Duplicate keys in a JSON body, per `fieldValidation` (YAML bodies refuse them already).
pub fn duplicates(body: &[u8], content_type: &str, mode: Mode) -> Result<Vec<String>, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if !(ct.is_empty() || ct.ends_with("json")) || mode == Mode::Ignore {
        return Ok(vec![]);
    }
    verdict(
        crate::encoding::duplicate_fields::find(body)
            .iter()
            .map(|f| format!("duplicate field {f:?}"))
            .collect(),
        mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    fn headers(resp: &Response) -> Vec<String> {
        resp.headers()
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn warnings_are_deduplicated_and_bounded_as_upstream() {
        let resp = with_warnings(
            "ok".into_response(),
            &["a".into(), "a".into(), "say \"hi\"".into()],
        );
        let resp = with_warnings(resp, &["a".into(), "b".into()]);
        assert_eq!(
            headers(&resp),
            [r#"299 - "a""#, r#"299 - "say \"hi\"""#, r#"299 - "b""#]
        );

        // 20 texts of 300 runes: 13 fit in 4096 before truncation starts; then every
        // text is cut to 256 runes and adding stops once 4096 runes are written.
        let many: Vec<String> = (0..40)
            .map(|i| format!("{i:03}{}", "x".repeat(297)))
            .collect();
        let resp = with_warnings("ok".into_response(), &many);
        let got = headers(&resp);
        assert_eq!(got.len(), 16, "{got:?}");
        assert!(got.iter().all(|h| h.len() == 256 + 8), "{got:?}");
        assert!(got[0].starts_with(r#"299 - "000"#) && got[15].starts_with(r#"299 - "015"#));
    }
}
