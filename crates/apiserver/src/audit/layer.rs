//! The request-record layer: gives each request its notes, turns the warnings handlers left
//! into `Warning` headers, and writes the request's audit events when the policy asks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::event::{self, Event};
use super::notes::{self, Notes};
use super::policy::{Decision, Level, Stage};
use super::Auditor;
use crate::serving::request_info::{decode_path, RequestInfo};
use crate::serving::user_info::User;
use crate::AppState;

/// Failed responses are Status objects; more than this is not read for the log.
const STATUS_BYTES: usize = 64 * 1024;
/// The most of a response body RequestResponse records (larger ones are logged without it).
const RESPONSE_BYTES: usize = 8 * 1024 * 1024;

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let user = req.extensions().get::<User>().cloned();
    let n = Notes::new(user.clone());
    let resp = match &state.audit {
        Some(auditor) => audited(auditor.clone(), user, n.clone(), req, next).await,
        None => notes::scope(n.clone(), next.run(req)).await,
    };
    crate::encoding::field_validation::with_warnings(resp, &n.take_warnings())
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

async fn audited(
    auditor: Arc<Auditor>,
    user: Option<User>,
    n: Arc<Notes>,
    req: Request,
    next: Next,
) -> Response {
    let received = chrono::Utc::now();
    let path = decode_path(req.uri().path()).unwrap_or_else(|_| req.uri().path().to_string());
    let info = RequestInfo::new(req.method().as_str(), &path, &query_map(req.uri().query()));
    let (username, groups) = match &user {
        Some(u) => (u.0.username.clone(), u.0.groups.clone()),
        None => (
            "system:anonymous".to_string(),
            vec!["system:unauthenticated".to_string()],
        ),
    };
    let decision: Decision = auditor.policy.decide(&super::policy::Request {
        user: &username,
        groups: &groups,
        verb: &info.verb,
        resource_request: info.resource_request,
        path: &info.path,
        api_group: &info.api_group,
        namespace: &info.namespace,
        resource: &info.resource,
        subresource: &info.subresource,
        name: &info.name,
    });
    if decision.level == Level::None {
        return notes::scope(n, next.run(req)).await;
    }
    let user_json = match &user {
        Some(u) => u.0.to_json(),
        None => json!({"username": username, "groups": groups}),
    };
    let mut ev = Event::new(&info, decision.level, user_json, received);
    ev.audit_id =
        header(req.headers(), "audit-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    ev.request_uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    ev.user_agent = header(req.headers(), "user-agent");
    ev.source_ips = header(req.headers(), "x-forwarded-for")
        .map(|f| f.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        ev.source_ips.push(peer.ip().to_string());
    }
    let omitted = |s: Stage| decision.omit_stages.contains(&s);
    let empty = Default::default();
    let mut req = req;
    if decision.level >= Level::Request && !matches!(info.verb.as_str(), "get" | "list" | "watch") {
        let (parts, body) = req.into_parts();
        let bytes = match crate::serving::request_body::read_body(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let content_type = header(&parts.headers, "content-type").unwrap_or_default();
        ev.request_object = decode_request(&content_type, &bytes, decision.omit_managed_fields);
        req = Request::from_parts(parts, Body::from(bytes));
    }
    if !omitted(Stage::RequestReceived) {
        auditor
            .writer
            .send(ev.line(Stage::RequestReceived, None, None, &empty));
    }
    let resp = notes::scope(n.clone(), next.run(req)).await;
    let code = resp.status().as_u16();
    let streaming = info.verb == "watch" || code == 101;
    if streaming {
        // Long-running: ResponseStarted now, ResponseComplete when the body ends.
        let status = event::response_status(code, None);
        if !omitted(Stage::ResponseStarted) {
            auditor.writer.send(ev.line(
                Stage::ResponseStarted,
                Some(status.clone()),
                None,
                &n.annotations(),
            ));
        }
        if omitted(Stage::ResponseComplete) {
            return resp;
        }
        let done = Completion {
            auditor,
            event: Some(ev),
            status,
            notes: n,
        };
        let (parts, body) = resp.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _held = &done;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    // A create's objectRef names the object, which only its body says.
    let create = info.verb == "create";
    let wants_body = code >= 400 || decision.level >= Level::RequestResponse || create;
    let resp_type = header(resp.headers(), "content-type").unwrap_or_default();
    let (resp, body) = if wants_body {
        let limit = if decision.level >= Level::RequestResponse || create {
            RESPONSE_BYTES
        } else {
            STATUS_BYTES
        };
        buffer(resp, limit).await
    } else {
        (resp, None)
    };
    // A client that asked for protobuf got it; the log records the same object as JSON.
    let parsed = body
        .as_ref()
        .and_then(|b| decode_request(&resp_type, b, decision.omit_managed_fields));
    // A create names its object only in the body.
    if code < 300 && info.verb == "create" {
        if let Some(obj) = parsed.clone().or_else(|| ev.request_object.clone()) {
            ev.name_from(&obj);
        }
    }
    if !omitted(Stage::ResponseComplete) {
        let status = event::response_status(code, parsed.as_ref());
        auditor.writer.send(ev.line(
            Stage::ResponseComplete,
            Some(status),
            parsed.as_ref(),
            &n.annotations(),
        ));
    }
    resp
}

/// Sends a long-running request's ResponseComplete when its body is dropped.
struct Completion {
    auditor: Arc<Auditor>,
    event: Option<Event>,
    status: Value,
    notes: Arc<Notes>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(ev) = self.event.take() {
            self.auditor.writer.send(ev.line(
                Stage::ResponseComplete,
                Some(self.status.clone()),
                None,
                &self.notes.annotations(),
            ));
        }
    }
}

/// A request or response body as an object: JSON, YAML or protobuf (kubectl sends and
/// receives protobuf); patches are recorded as the JSON they are.
fn decode_request(content_type: &str, bytes: &[u8], omit_managed_fields: bool) -> Option<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let mut v = match ct {
        crate::encoding::protobuf::CONTENT_TYPE => crate::encoding::protobuf::decode(bytes).ok()?,
        "application/yaml" | "application/apply-patch+yaml" => {
            crate::limits::parse_request_yaml(std::str::from_utf8(bytes).ok()?).ok()?
        }
        _ => return parse_json(bytes, omit_managed_fields),
    };
    if omit_managed_fields {
        event::strip_managed_fields(&mut v);
    }
    Some(v)
}

fn parse_json(bytes: &[u8], omit_managed_fields: bool) -> Option<Value> {
    let mut v: Value = crate::limits::parse_stored(bytes).ok()?;
    if omit_managed_fields {
        event::strip_managed_fields(&mut v);
    }
    Some(v)
}

/// Read a JSON or protobuf response body up to `limit` for the log; the client gets the
/// same bytes.
async fn buffer(resp: Response, limit: usize) -> (Response, Option<Bytes>) {
    let json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.contains("json") || c.starts_with(crate::encoding::protobuf::CONTENT_TYPE)
        });
    let small = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n <= limit);
    if !json || !small {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => buf.extend_from_slice(&c),
            Err(e) => {
                // The client sees the same failure it would have seen unbuffered.
                let head = futures::stream::iter([Ok(buf.freeze()), Err(e)]);
                return (Response::from_parts(parts, Body::from_stream(head)), None);
            }
        }
        if buf.len() > limit {
            // Too big to record: hand on what was read, then the rest as it comes.
            let head = futures::stream::once(async move { Ok(buf.freeze()) });
            return (
                Response::from_parts(parts, Body::from_stream(head.chain(stream))),
                None,
            );
        }
    }
    let bytes = buf.freeze();
    (
        Response::from_parts(parts, Body::from(bytes.clone())),
        Some(bytes),
    )
}
