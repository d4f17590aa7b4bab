//! Watch: a chunked stream of `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}`
//! lines fed by the store's watch, filtered by namespace and selectors, optionally as
//! one-row Tables, with bookmarks and `timeoutSeconds`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_store::{EventKind, KeyRange, StoreError, WatchEvent};
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::discovery::table;
use crate::object::set_meta;
use crate::rest::decode_for;
use crate::rest::list::{collection_prefix, read_page, Selectors};
use crate::status::ApiError;
use crate::storage::raw_object;
use crate::types::registry::ResourceType;
use crate::types::Target;
use crate::AppState;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Bytes of encoded events a watch may have waiting for its client. Behind that, events
/// wait (in the store's per-watcher queue, itself bounded) for the client to read.
const SEND_BUDGET: u32 = 4 << 20;

/// A client that takes no data for this long is dropped (upstream closes watchers whose
/// buffer stays full); its queued events are released.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The producer's end of a watch response: sends wait while the client has
/// SEND_BUDGET bytes unread, and give up (ending the watch) after STALL_LIMIT.
struct Sink {
    tx: mpsc::Sender<(Bytes, tokio::sync::OwnedSemaphorePermit)>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Sink {
    async fn send(&self, line: Bytes) -> bool {
        let want = u32::try_from(line.len())
            .unwrap_or(u32::MAX)
            .clamp(1, SEND_BUDGET);
        let permit =
            match tokio::time::timeout(STALL_LIMIT, self.budget.clone().acquire_many_owned(want))
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    tracing::debug!("watch client stopped reading; closing the watch");
                    return false;
                }
            };
        self.tx.send((line, permit)).await.is_ok()
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

struct Encoder {
    rt: std::sync::Arc<ResourceType>,
    as_table: bool,
    /// Objects as PartialObjectMetadata (a metadata informer's watch).
    as_metadata: bool,
    /// The Table apiVersion asked for.
    table_version: &'static str,
    /// A built-in type as JSON, whole or as metadata, no Table: event lines are spliced
    /// from stored bytes (selectors judged from a parse of the fields they read).
    splice: bool,
    /// Length-prefixed protobuf `WatchEvent` frames instead of JSON lines.
    proto: bool,
}

impl Encoder {
    fn line(&self, kind: &'static str, obj: &Value) -> Bytes {
        let of_object = kind == "ADDED" || kind == "MODIFIED" || kind == "DELETED";
        let object = if self.as_table && of_object {
            let rv = crate::object::meta_str(obj, "resourceVersion")
                .unwrap_or("")
                .to_string();
            table::table(
                &self.rt,
                std::slice::from_ref(obj),
                &rv,
                None,
                self.table_version,
            )
        } else if self.as_metadata && of_object {
            crate::encoding::negotiation::partial_metadata(obj)
        } else {
            obj.clone()
        };
        if self.proto {
            match crate::encoding::protobuf_encode::watch_frame(kind, &object) {
                Ok(frame) => return Bytes::from(frame),
                // Only a bug in the field table gets here: say so in the stream.
                Err(e) => {
                    tracing::warn!(resource = self.rt.plural, error = %e, "watch event has no protobuf form");
                    let status = ApiError::internal(format!("encoding a watch event: {e}"));
                    return crate::encoding::protobuf_encode::watch_frame(
                        "ERROR",
                        &status.to_json(),
                    )
                    .map(Bytes::from)
                    .unwrap_or_default();
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        event_head(kind, &mut out);
        if serde_json::to_writer(&mut out, &object).is_err() {
            // A Value always serialises; were it not to, the line would not be JSON.
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }
    fn bookmark(&self, rev: i64) -> Bytes {
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
        self.line("BOOKMARK", &obj)
    }
    fn error(&self, e: &ApiError) -> Bytes {
        self.line("ERROR", &e.to_json())
    }
}

/// Turn one store event into the API event this watcher should see, if any.
fn translate(
    rt: &ResourceType,
    ev: &WatchEvent,
    sel: &Selectors,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let old = match &ev.prev_kv {
        Some(p) => Some(decode_for(rt, p)?),
        None => None,
    };
    match ev.kind {
        EventKind::Put => {
            let new = decode_for(rt, &ev.kv)?;
            let was = old.as_ref().is_some_and(|o| sel.matches(o));
            let is = sel.matches(&new);
            Ok(match (was, is) {
                (true, true) => Some(("MODIFIED", new)),
                (false, true) => Some(("ADDED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            })
        }
        EventKind::Delete => match old {
            Some(mut o) if sel.matches(&o) => {
                set_meta(
                    &mut o,
                    "resourceVersion",
                    json!(ev.kv.mod_revision.to_string()),
                );
                Ok(Some(("DELETED", o)))
            }
            _ => Ok(None),
        },
    }
}

/// An event line spliced from the stored bytes, for watchers `Encoder::splice` allows: no
/// tree, no clone — the cost that dominates when one write fans out to many watchers.
/// Selectors read a parse of only their fields. `Some(None)`: this watcher does not see
/// the event; None: the bytes were not as expected (take the slow path).
fn spliced_line(ev: &WatchEvent, sel: &Selectors, as_metadata: bool) -> Option<Option<Bytes>> {
    let was = match &ev.prev_kv {
        Some(p) => sel.matches_stored(&p.value)?,
        None => false,
    };
    let (kind, stored) = match ev.kind {
        EventKind::Put => match (was, sel.matches_stored(&ev.kv.value)?) {
            (true, true) => ("MODIFIED", &ev.kv.value),
            (false, true) => ("ADDED", &ev.kv.value),
            // Out of the selection: the watcher sees it leave, as it is now.
            (true, false) => ("DELETED", &ev.kv.value),
            (false, false) => return Some(None),
        },
        EventKind::Delete => match &ev.prev_kv {
            Some(p) if was => ("DELETED", &p.value),
            _ => return Some(None),
        },
    };
    let mut out = Vec::with_capacity(stored.len() + 64);
    event_head(kind, &mut out);
    // A deletion shows the last state with the deletion's revision, as upstream does.
    let rv = ev.kv.mod_revision;
    let spliced = if as_metadata {
        raw_object::append_partial_metadata(stored, rv, &mut out)
    } else {
        raw_object::append_with_resource_version(stored, rv, &mut out)
    };
    if !spliced {
        return None;
    }
    out.extend_from_slice(b"}\n");
    Some(Some(Bytes::from(out)))
}

/// The start of a JSON watch event line, `{"type":"<kind>","object":`: `type` first, as
/// upstream writes it (Go's field order) and as clients that capture the object's text while
/// decoding (capstan's own shared watcher) read it without buffering the object.
fn event_head(kind: &'static str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
}

/// Send one store item to the client; false when the watch is over.
async fn deliver(
    item: Option<capstan_store::Result<std::sync::Arc<WatchEvent>>>,
    tx: &Sink,
    enc: &Encoder,
    sel: &Selectors,
    last: &mut i64,
) -> bool {
    match item {
        Some(Ok(ev)) => {
            *last = ev.revision();
            if enc.splice {
                match spliced_line(&ev, sel, enc.as_metadata) {
                    Some(Some(line)) => return tx.send(line).await,
                    Some(None) => return true,
                    None => {}
                }
            }
            match translate(&enc.rt, &ev, sel) {
                Ok(Some((kind, obj))) => tx.send(enc.line(kind, &obj)).await,
                Ok(None) => true,
                Err(e) => {
                    let _ = tx.send(enc.error(&e)).await;
                    false
                }
            }
        }
        Some(Err(StoreError::WatcherLagged { .. })) | Some(Err(StoreError::Compacted { .. })) => {
            // The client resumes from the last resourceVersion it saw.
            let e = ApiError::expired(format!(
                "watch of {} fell behind; resume from resourceVersion {last}",
                enc.rt.plural
            ));
            let _ = tx.send(enc.error(&e)).await;
            false
        }
        Some(Err(_)) | None => false,
    }
}

pub async fn watch(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    accept: &str,
    proto: bool,
    place: impl Send + 'static,
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(t, query)?;
    let prefix = collection_prefix(t);
    let table_version = table::table_version(accept);
    let as_table = table_version.is_some();
    let as_metadata = !as_table && crate::encoding::negotiation::metadata_only(accept);
    let enc = Encoder {
        rt: t.rt.clone(),
        as_table,
        as_metadata,
        table_version: table_version.unwrap_or(table::TABLE_V1),
        splice: !as_table && !proto && t.rt.custom.is_none(),
        proto,
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    // Upstream: unset or 0 is the server's default; a negative value ends the watch at once.
    let timeout = match crate::rest::list::int_param(query, "timeoutSeconds")? {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(n) => Duration::from_secs(u64::try_from(n).unwrap_or(0)),
    }
    // A client may ask for any number of seconds; no watch outlives a day.
    .min(Duration::from_secs(86_400));
    crate::rest::list::validate_list_options(query, true)?;
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let (tx, rx) = mpsc::channel(1024);
    let tx = Sink {
        tx,
        budget: std::sync::Arc::new(tokio::sync::Semaphore::new(SEND_BUDGET as usize)),
    };
    // "" or "0": start with the current state as synthetic ADDED events.
    let (initial, from) = if rv.is_empty() || rv == "0" {
        let page = read_page(
            state,
            &t.rt,
            &prefix,
            &sel,
            None,
            prefix.as_bytes().to_vec(),
            None,
        )
        .await?;
        (page.items, page.revision)
    } else {
        let n: i64 = rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resourceVersion {rv:?}: must be an integer"
            ))
        })?;
        let current = state.store.current_revision().await?;
        if n > current {
            return Err(StoreError::FutureRevision {
                requested: n,
                current,
            }
            .into());
        }
        (Vec::new(), n)
    };
    let stream = match state
        .store
        .watch(KeyRange::prefix(Bytes::from(prefix.clone())), from + 1)
        .await
    {
        Ok(s) => Some(s),
        Err(StoreError::Compacted { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let store = state.store.clone();
    let bookmark_every = state.bookmark_every;
    tokio::spawn(async move {
        // The watch holds its place among open watches until it ends.
        let _place = place;
        let Some(mut stream) = stream else {
            let compacted = store.compacted_revision().await.unwrap_or(0);
            let e = ApiError::expired(format!("too old resource version: {from} ({compacted})"));
            let _ = tx.send(enc.error(&e)).await;
            return;
        };
        for obj in &initial {
            if !tx.send(enc.line("ADDED", obj)).await {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = from;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    // Progress, not just the last event: read the store's revision, hand
                    // over everything already queued, and if the stream is live and idle
                    // every change up to that revision has been seen.
                    let target = match stream.progress_revision() {
                        Some(reported) => reported,
                        None => store.current_revision().await.unwrap_or(last),
                    };
                    while let Some(item) = stream.next().now_or_never() {
                        if !deliver(item, &tx, &enc, &sel, &mut last).await {
                            return;
                        }
                    }
                    let at = if stream.is_live() { target.max(last) } else { last };
                    if !tx.send(enc.bookmark(at)).await { return; }
                }
                item = stream.next() => {
                    if !deliver(item, &tx, &enc, &sel, &mut last).await {
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        // The permit goes with the chunk to the connection: budget frees as it is taken.
        rx.recv()
            .await
            .map(|(b, _permit)| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    }));
    let content_type = if proto {
        crate::encoding::protobuf_encode::WATCH_CONTENT_TYPE
    } else {
        "application/json"
    };
    Ok(([(CONTENT_TYPE, content_type)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_store::KeyValue;

    fn kv(value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(b"/registry/configmaps/ns/a"),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: rev,
            version: 1,
        }
    }

    fn line(ev: &WatchEvent) -> Bytes {
        spliced_line(ev, &Selectors::everything(), false)
            .expect("spliceable")
            .expect("seen")
    }

    fn parse(line: Bytes) -> Value {
        assert!(line.ends_with(b"\n"));
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn raw_lines_match_the_event_kind_and_carry_the_event_revision() {
        let stored = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;
        let added = WatchEvent {
            kind: EventKind::Put,
            kv: kv(stored, 2),
            prev_kv: None,
        };
        let v = parse(line(&added));
        assert_eq!(v["type"], "ADDED");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "2");
        let modified = WatchEvent {
            kind: EventKind::Put,
            kv: kv(stored, 3),
            prev_kv: Some(kv(stored, 2)),
        };
        assert_eq!(parse(line(&modified))["type"], "MODIFIED");
        // A delete shows the last state with the deletion's revision, as upstream does.
        let deleted = WatchEvent {
            kind: EventKind::Delete,
            kv: kv("", 4),
            prev_kv: Some(kv(stored, 3)),
        };
        let v = parse(line(&deleted));
        assert_eq!(v["type"], "DELETED");
        assert_eq!(v["object"]["metadata"]["name"], "a");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "4");
    }

    #[test]
    fn spliced_lines_follow_objects_into_and_out_of_a_selection() {
        let sel = Selectors::new(
            crate::types::selector::LabelSelector::parse("app=a").unwrap(),
            Default::default(),
        );
        let a =
            r#"{"kind":"ConfigMap","metadata":{"name":"x","labels":{"app":"a"}},"data":{"k":"v"}}"#;
        let b = r#"{"kind":"ConfigMap","metadata":{"name":"x","labels":{"app":"b"}}}"#;
        let put = |new: &str, old: Option<&str>| WatchEvent {
            kind: EventKind::Put,
            kv: kv(new, 5),
            prev_kv: old.map(|o| kv(o, 4)),
        };
        let seen = |ev: &WatchEvent, meta: bool| {
            spliced_line(ev, &sel, meta).expect("spliceable").map(parse)
        };
        assert_eq!(seen(&put(a, None), false).unwrap()["type"], "ADDED");
        assert!(seen(&put(b, None), false).is_none());
        assert!(seen(&put(b, Some(b)), false).is_none());
        let left = seen(&put(b, Some(a)), false).unwrap();
        assert_eq!(left["type"], "DELETED");
        assert_eq!(left["object"]["metadata"]["labels"]["app"], "b");
        let joined = seen(&put(a, Some(b)), true).unwrap();
        assert_eq!(joined["type"], "ADDED");
        assert_eq!(joined["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(joined["object"]["metadata"]["resourceVersion"], "5");
        assert!(joined["object"].get("data").is_none());
        let deleted = WatchEvent {
            kind: EventKind::Delete,
            kv: kv("", 6),
            prev_kv: Some(kv(a, 5)),
        };
        let gone = seen(&deleted, false).unwrap();
        assert_eq!(gone["type"], "DELETED");
        assert_eq!(gone["object"]["data"]["k"], "v");
        assert_eq!(gone["object"]["metadata"]["resourceVersion"], "6");
        // Bytes that are not an object with metadata take the slow path.
        let odd = put(r#"{"kind":"X"}"#, None);
        assert!(spliced_line(&odd, &Selectors::everything(), false).is_none());
    }
}
