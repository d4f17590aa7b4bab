//! Collection verbs: list (selectors, `limit`/`continue` paging consistent at one revision,
//! `resourceVersion`/`resourceVersionMatch`) and deletecollection.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use capstan_store::{prefix_end, KeyRange, KeyValue, RangeRequest};
use serde_json::{json, Value};

use crate::discovery::table;
use crate::rest::{self, decode_stored, json_response, DeleteOptions};
use crate::status::{ApiError, Cause};
use crate::storage::raw_object;
use crate::types::registry::ResourceType;
use crate::types::selector::{FieldSelector, LabelSelector};
use crate::types::Target;
use crate::AppState;

/// Key prefix of a collection: one namespace, or all of them.
pub fn collection_prefix(t: &Target) -> String {
    match (&t.namespace, t.rt.namespaced) {
        (Some(ns), true) => format!("{}{}/", t.rt.key_prefix(), ns),
        _ => t.rt.key_prefix(),
    }
}

pub struct Selectors {
    pub label: LabelSelector,
    pub field: FieldSelector,
    /// What the selectors read of an object, so stored bytes can be judged from a parse
    /// of those fields alone (`matches_stored`).
    view: raw_object::Paths,
}

impl Selectors {
    pub fn from_query(t: &Target, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        // Upstream answers a selector that does not parse with the parser's own message.
        let label =
            LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
                .map_err(ApiError::bad_request)?;
        let field = FieldSelector::parse(
            &t.rt,
            query.get("fieldSelector").map(String::as_str).unwrap_or(""),
        )
        .map_err(ApiError::bad_request)?;
        Ok(Selectors::new(label, field))
    }

    pub(crate) fn new(label: LabelSelector, field: FieldSelector) -> Self {
        let mut view = raw_object::Paths::default();
        if !label.is_empty() {
            view.add(&["metadata", "labels"]);
        }
        for path in field.paths() {
            view.add(&path);
        }
        Selectors { label, field, view }
    }

    /// Matches every object (for internal sweeps).
    pub fn everything() -> Self {
        Selectors::new(LabelSelector::default(), FieldSelector::default())
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_empty() && self.field.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches(obj) && self.field.matches(obj)
    }

    /// `matches` for an object as stored (a built-in type's bytes, whose fields read as
    /// served), parsing only the fields the selectors read. None if the bytes do not parse.
    pub fn matches_stored(&self, stored: &[u8]) -> Option<bool> {
        if self.view.is_empty() {
            return Some(true);
        }
        raw_object::parse_paths(stored, &self.view).map(|v| self.matches(&v))
    }
}

fn encode_continue(rev: i64, next_key: &[u8]) -> String {
    let doc =
        json!({"rv": rev, "start": base64::engine::general_purpose::STANDARD.encode(next_key)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, Vec<u8>), ApiError> {
    let bad =
        || ApiError::bad_request("continue key is not valid: the continue token is malformed");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = doc
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = doc
        .get("start")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(bad)?;
    if !start.starts_with(prefix.as_bytes()) {
        return Err(bad());
    }
    Ok((rev, start))
}

/// An integer query parameter (`limit`, `timeoutSeconds`) as upstream decodes ListOptions:
/// absent or empty is unset, anything else must parse as an int64 or the request is a 400
/// carrying Go's strconv message.
pub fn int_param(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = query.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    v.parse::<i64>().map(Some).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: {why}"))
    })
}

/// Upstream's ValidateListOptions (k8s.io/apimachinery/pkg/apis/meta/internalversion/
/// validation), answered as `ListOptions.meta.k8s.io "" is invalid: ...` (422). Watches
/// are checked with the WatchList feature off: this server does not stream initial events,
/// so a client asking for them is told so and falls back to list-then-watch.
pub fn validate_list_options(query: &HashMap<String, String>, watch: bool) -> Result<(), ApiError> {
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
    let matching = get("resourceVersionMatch");
    let send_initial = !get("sendInitialEvents").is_empty();
    let forbidden = |field: &str, detail: &str| Cause::forbidden(field, detail);
    let not_supported = |value: &str, supported: &[&str]| Cause {
        reason: "FieldValueNotSupported",
        field: "resourceVersionMatch".into(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            supported
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut causes = Vec::new();
    if watch {
        if send_initial {
            if matching != "NotOlderThan" {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
            ));
        }
        if !matching.is_empty() {
            if !send_initial {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if matching != "NotOlderThan" {
                causes.push(not_supported(matching, &["NotOlderThan"]));
            }
            if !get("continue").is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if !matching.is_empty() {
            let rv = get("resourceVersion");
            if rv.is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !get("continue").is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                causes.push(not_supported(matching, &["Exact", "NotOlderThan", ""]));
            }
            if matching == "Exact" && rv == "0" {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial {
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::invalid("meta.k8s.io", "ListOptions", "", causes);
    // Upstream's details omit the empty name.
    if let Some(d) = e.details.as_mut().and_then(Value::as_object_mut) {
        d.remove("name");
    }
    Err(e)
}

/// The revision a list reads at, from `resourceVersion` and `resourceVersionMatch`.
pub fn read_revision(query: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let matching = query
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    if rv.is_empty() || rv == "0" {
        if matching == "Exact" {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Exact requires a non-zero resourceVersion",
            ));
        }
        return Ok(None);
    }
    let n: i64 = rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}: must be an integer"
        ))
    })?;
    match matching {
        "Exact" => Ok(Some(n)),
        "" | "NotOlderThan" => Ok(None),
        other => Err(ApiError::bad_request(format!(
            "unsupported resourceVersionMatch {other:?}"
        ))),
    }
}

pub struct Page<T = Value> {
    pub items: Vec<T>,
    pub revision: i64,
    pub continue_token: Option<String>,
    /// Where the next page starts (set with `continue_token`).
    pub next_key: Option<Vec<u8>>,
}

/// Read matching objects, at most `limit`, from `start` at revision `at` (None = latest).
pub async fn read_page(
    state: &AppState,
    rt: &ResourceType,
    prefix: &str,
    sel: &Selectors,
    limit: Option<usize>,
    start: Vec<u8>,
    at: Option<i64>,
) -> Result<Page, ApiError> {
    read_page_with(state, prefix, limit, start, at, |kv| {
        let obj = rest::decode_for(rt, kv)?;
        Ok(sel.matches(&obj).then_some(obj))
    })
    .await
}

/// The paging loop shared by every list: `keep` turns a stored key into an item, or
/// `None` when the selectors exclude it.
async fn read_page_with<T>(
    state: &AppState,
    prefix: &str,
    limit: Option<usize>,
    mut start: Vec<u8>,
    mut at: Option<i64>,
    mut keep: impl FnMut(&KeyValue) -> Result<Option<T>, ApiError>,
) -> Result<Page<T>, ApiError> {
    let end = prefix_end(prefix.as_bytes());
    let mut items = Vec::new();
    let chunk = limit.map(|l| l.clamp(1, 10_000));
    loop {
        let range = KeyRange {
            start: Bytes::from(start.clone()),
            end: end.clone(),
        };
        let mut req = RangeRequest::new(range);
        req.limit = chunk;
        req.revision = at;
        let resp = state.store.range(req).await?;
        at = Some(resp.revision);
        let n = resp.kvs.len();
        for (i, kv) in resp.kvs.iter().enumerate() {
            if let Some(item) = keep(kv)? {
                items.push(item);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let more_here = i + 1 < n || resp.more;
                let next_key = more_here.then(|| {
                    let mut next = kv.key.to_vec();
                    next.push(0);
                    next
                });
                let token = next_key
                    .as_deref()
                    .map(|next| encode_continue(resp.revision, next));
                return Ok(Page {
                    items,
                    revision: resp.revision,
                    continue_token: token,
                    next_key,
                });
            }
        }
        match (resp.more, resp.kvs.last()) {
            (true, Some(last)) => {
                start = last.key.to_vec();
                start.push(0);
            }
            _ => {
                return Ok(Page {
                    items,
                    revision: resp.revision,
                    continue_token: None,
                    next_key: None,
                })
            }
        }
    }
}

/// One list item as JSON bytes with its resourceVersion, if the selectors keep it. Stored
/// bytes are spliced, not parsed (the selectors read a parse of only their fields), unless
/// the object has an unexpected shape.
fn raw_item(kv: &KeyValue, sel: &Selectors) -> Result<Option<Vec<u8>>, ApiError> {
    match sel.matches_stored(&kv.value) {
        Some(false) => return Ok(None),
        Some(true) => {
            let mut out = Vec::new();
            if raw_object::append_with_resource_version(&kv.value, kv.mod_revision, &mut out) {
                return Ok(Some(out));
            }
        }
        None => {}
    }
    let obj = decode_stored(kv)?;
    if !sel.matches(&obj) {
        return Ok(None);
    }
    serde_json::to_vec(&obj)
        .map(Some)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// How many objects follow a page, as upstream's storage reports `remainingItemCount`:
/// only when there is a next page and no selector filters the collection (a count of keys
/// would then overstate what the client will get, so upstream leaves it out).
async fn remaining_items(
    state: &AppState,
    prefix: &str,
    sel: &Selectors,
    next_key: Option<&[u8]>,
    revision: i64,
) -> Result<Option<i64>, ApiError> {
    let Some(start) = next_key else {
        return Ok(None);
    };
    if !sel.label.is_empty() || !sel.field.is_empty() {
        return Ok(None);
    }
    let mut req = RangeRequest::new(KeyRange {
        start: Bytes::from(start.to_vec()),
        end: prefix_end(prefix.as_bytes()),
    });
    req.keys_only = true;
    req.revision = Some(revision);
    let resp = state.store.range(req).await?;
    Ok(Some(i64::try_from(resp.kvs.len()).unwrap_or(i64::MAX)))
}

/// A list's metadata: resourceVersion, continue and remainingItemCount when set.
fn list_meta(revision: i64, continue_token: Option<&str>, remaining: Option<i64>) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// A JSON list body written as bytes, upstream's key order (kind, apiVersion, metadata, items).
fn raw_list_body(t: &Target, page: Page<Vec<u8>>, remaining: Option<i64>) -> Vec<u8> {
    let items: usize = page.items.iter().map(|i| i.len() + 1).sum();
    let meta = list_meta(page.revision, page.continue_token.as_deref(), remaining);
    let mut out = Vec::with_capacity(items + 256);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(json!(t.rt.list_kind()).to_string().as_bytes());
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(json!(t.rt.api_version()).to_string().as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(meta.to_string().as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

pub async fn list(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(t, query)?;
    let prefix = collection_prefix(t);
    // Zero or negative is no limit, as upstream's storage pages only when limit > 0.
    let limit = int_param(query, "limit")?
        .filter(|l| *l > 0)
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    // Decoded (a 400 when malformed) but not used: a list is not held open.
    int_param(query, "timeoutSeconds")?;
    validate_list_options(query, false)?;
    let (start, at) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rev, start) = decode_continue(token, &prefix)?;
            (start, Some(rev))
        }
        None => {
            let at = read_revision(query)?;
            // NotOlderThan a revision the store has not reached yet: upstream's 504.
            if at.is_none() {
                if let Some(n) = query
                    .get("resourceVersion")
                    .and_then(|rv| rv.parse::<i64>().ok())
                {
                    let current = state.store.current_revision().await?;
                    if n > current {
                        return Err(capstan_store::StoreError::FutureRevision {
                            requested: n,
                            current,
                        }
                        .into());
                    }
                }
            }
            (prefix.as_bytes().to_vec(), at)
        }
    };
    let expired = |e: ApiError| {
        if e.code == StatusCode::GONE && query.contains_key("continue") {
            ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            )
        } else {
            e
        }
    };
    let metadata_only = crate::encoding::negotiation::metadata_only(accept);
    if !table::wants_table(accept) && !metadata_only && t.rt.custom.is_none() {
        // The common case (informers, kubectl -o json/yaml): stored bytes straight through.
        let page = read_page_with(state, &prefix, limit, start, at, |kv| raw_item(kv, &sel))
            .await
            .map_err(expired)?;
        let remaining = remaining_items(
            state,
            &prefix,
            &sel,
            page.next_key.as_deref(),
            page.revision,
        )
        .await
        .map_err(expired)?;
        return Ok(rest::raw_json_response(
            StatusCode::OK,
            raw_list_body(t, page, remaining),
        ));
    }
    let page = read_page(state, &t.rt, &prefix, &sel, limit, start, at)
        .await
        .map_err(expired)?;
    let remaining = remaining_items(
        state,
        &prefix,
        &sel,
        page.next_key.as_deref(),
        page.revision,
    )
    .await
    .map_err(expired)?;
    let rv = page.revision.to_string();
    if let Some(version) = table::table_version(accept) {
        let mut tbl = table::table(
            &t.rt,
            &page.items,
            &rv,
            page.continue_token.as_deref(),
            version,
        );
        if let Some(n) = remaining {
            tbl["metadata"]["remainingItemCount"] = json!(n);
        }
        return Ok(json_response(StatusCode::OK, &tbl));
    }
    let meta = list_meta(page.revision, page.continue_token.as_deref(), remaining);
    if metadata_only {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(crate::encoding::negotiation::partial_metadata)
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": t.rt.list_kind(), "apiVersion": t.rt.api_version(), "metadata": meta, "items": page.items}),
    ))
}

/// Objects a deletecollection reads and deletes per page.
const DELETE_COLLECTION_PAGE: usize = 500;

/// DELETE of a collection (upstream's deletecollection): every object the selectors pick is
/// deleted with the request's options, and the response lists what was deleted.
pub async fn delete_collection(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(t, query)?;
    let opts: DeleteOptions = rest::delete_options(query, body)?;
    let prefix = collection_prefix(t);
    // A page at a time, each deleted object written out as JSON at once: held as values, a
    // namespace's 30,000 pods took the server past a gigabyte (the list read whole, then
    // every deleted object kept for the response); as bytes they cost their JSON. Each page
    // is read at the latest revision after the last key done (no old revision to outlive a
    // compaction), so an object created meanwhile further along is deleted too.
    let mut items: Vec<u8> = Vec::new();
    let mut start = prefix.as_bytes().to_vec();
    let mut revision = None;
    loop {
        let page = read_page(
            state,
            &t.rt,
            &prefix,
            &sel,
            Some(DELETE_COLLECTION_PAGE),
            start,
            None,
        )
        .await?;
        revision.get_or_insert(page.revision);
        for obj in page.items {
            let name = crate::object::name(&obj).to_string();
            let ns = crate::object::namespace(&obj).to_string();
            let target = Target {
                rt: t.rt.clone(),
                namespace: (!ns.is_empty()).then_some(ns),
                name: Some(name.clone()),
                subresource: None,
                manager: None,
            };
            match rest::delete_object(state, &target, &name, &opts).await {
                Ok((o, _)) => {
                    if !items.is_empty() {
                        items.push(b',');
                    }
                    serde_json::to_writer(&mut items, &o)
                        .map_err(|e| ApiError::internal(format!("encoding the response: {e}")))?;
                }
                Err(e) if e.code == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        match page.next_key {
            Some(next) => start = next,
            None => break,
        }
    }
    // {"kind":…,"apiVersion":…,"metadata":{…},"items":[…]}, upstream's field order.
    let head = format!(
        r#"{{"kind":{},"apiVersion":{},"metadata":{{"resourceVersion":"{}"}},"items":["#,
        Value::from(t.rt.list_kind()),
        Value::from(t.rt.api_version()),
        revision.unwrap_or_default()
    );
    let mut out = Vec::with_capacity(head.len() + items.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&items);
    out.extend_from_slice(b"]}");
    Ok(rest::raw_json_response(StatusCode::OK, out))
}
