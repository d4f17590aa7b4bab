//! Request routing: turns `/api/...` and `/apis/...` paths into a discovery document or a
//! resource target (type, namespace, name, subresource) and dispatches by verb.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::encoding::negotiation::{self, Output};
use crate::rest::{list, watch};
use crate::status::ApiError;
use crate::types::Target;
use crate::{discovery, rest, AppState};

enum Route {
    Doc(Response),
    Resource(Target),
}

fn parse(state: &AppState, path: &str, accept: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = &state.registry;
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => return Ok(Route::Doc(discovery::api(reg, accept))),
        ["apis"] => return Ok(Route::Doc(discovery::apis(reg, accept))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => {
            return discovery::group(reg, g)
                .map(|d| Route::Doc(axum::Json(d).into_response()))
                .ok_or_else(|| ApiError::path_not_found(path));
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    if !reg.has_group_version(group, version) {
        return Err(ApiError::path_not_found(path));
    }
    if rest.is_empty() {
        return Ok(Route::Doc(
            axum::Json(discovery::resource_list(reg, group, version)).into_response(),
        ));
    }
    let find = |plural: &str| {
        reg.find(group, version, plural)
            .ok_or_else(|| ApiError::path_not_found(path))
    };
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if reg
                .find(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            let rt = find(plural)?;
            match tail {
                [] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: None,
                    subresource: None,
                    manager: None,
                },
                [name] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: None,
                    manager: None,
                },
                [name, sub] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: Some(sub.to_string()),
                    manager: None,
                },
                _ => return Err(ApiError::path_not_found(path)),
            }
        }
        [plural] => Target {
            rt: find(plural)?,
            namespace: None,
            name: None,
            subresource: None,
            manager: None,
        },
        [plural, name, sub @ ..] if sub.len() <= 1 => {
            let rt = find(plural)?;
            if rt.namespaced {
                // `/api/v1/configmaps/foo` is not a path upstream serves.
                return Err(ApiError::path_not_found(path));
            }
            Target {
                rt,
                namespace: None,
                name: Some(name.to_string()),
                subresource: sub.first().map(|s| s.to_string()),
                manager: None,
            }
        }
        _ => return Err(ApiError::path_not_found(path)),
    };
    if let Some(sub) = &target.subresource {
        // Subresources the kind's strategy serves here (a pod's binding, a namespace's
        // finalize); the type's other listed subresources are the node agent's.
        // `pods/log` is served here, by proxying to the pod's node.
        let own = target
            .rt
            .strategy
            .own_subresources()
            .contains(&sub.as_str())
            || is_pod_log(&target)
            || crate::rest::pod_connect::is_connect(&target);
        if target.rt.subresources.iter().any(|s| s == sub) && !own {
            // Exec, attach, port-forward: the node agent's work, not reachable yet.
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "{}/{sub} needs a node agent, and none is connected to this server yet",
                    target.rt.plural
                ),
            ));
        }
        if !((sub == "status" && target.rt.has_status)
            || (sub == "scale" && target.rt.has_scale())
            || own)
        {
            return Err(ApiError::path_not_found(path));
        }
    }
    Ok(Route::Resource(target))
}

fn is_pod_log(t: &Target) -> bool {
    t.rt.group.is_empty() && t.rt.plural == "pods" && t.subresource.as_deref() == Some("log")
}

/// The field manager of a write: `fieldManager`, else the user agent's product name, as
/// kube-apiserver derives it (`kubectl/v1.33.0 (linux/amd64)` → `kubectl`).
fn field_manager(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let ua = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/')
        .next()
        .unwrap_or(ua)
        .trim()
        .chars()
        .take(128)
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// Bodies larger than this are decoded and merged off the reactor threads.
const HEAVY_BODY_BYTES: usize = 64 * 1024;

/// Run `f` to completion on this thread after handing the thread's other tasks to the
/// rest of the runtime (a no-op distinction on a single-threaded runtime, as in tests).
async fn off_reactor<F: std::future::Future>(f: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| Handle::current().block_on(f))
    } else {
        f.await
    }
}

/// Run synchronous work over a response body of `len` bytes: above `HEAVY_BODY_BYTES` after
/// handing this thread's other tasks to the rest of the runtime, as `off_reactor` does.
fn cpu_bound<T>(len: usize, f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if len > HEAVY_BODY_BYTES && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Who sent the request, from what authentication left in its extensions: this process's
/// own components (which take no places in flight), and the authenticated user; and the
/// pending upgrade of its connection (absent in-process and over HTTP/2), for `pods/exec`.
pub struct Caller {
    in_process: bool,
    user: Option<crate::serving::user_info::User>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            in_process: parts
                .extensions
                .get::<crate::serving::in_process::InProcess>()
                .is_some(),
            user: parts
                .extensions
                .get::<crate::serving::user_info::User>()
                .cloned(),
            upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        })
    }
}

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    caller: Caller,
    body: axum::body::Body,
) -> Response {
    let started = std::time::Instant::now();
    // Read the body here, so an oversized or stalled one is a Status like every other
    // error, and before taking a place among the requests in flight: a client trickling
    // its upload must not hold a place others need.
    let body: Bytes = match crate::serving::request_body::read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let is_watch = method == Method::GET && truthy(&query, "watch");
    // Only a real watch (a GET of a collection, below) streams; anything else saying
    // `watch=true` counts as an ordinary request.
    let permit = if caller.in_process {
        Ok(None)
    } else if is_watch {
        state.limiter.watch().map(Some)
    } else {
        state.limiter.request().map(Some)
    };
    let permit = match permit {
        Ok(p) => p,
        Err(over) => return over.into_response(),
    };
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Route on the decoded path, as upstream does (`my%2Dcm` is `my-cm`).
    let path = match crate::serving::request_info::decode_path(uri.path()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let target = match parse(&state, &path, &accept) {
        Ok(Route::Doc(resp)) => {
            return if method == Method::GET {
                resp
            } else {
                ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
                .into_response()
            };
        }
        Ok(Route::Resource(mut t)) => {
            t.manager = Some(field_manager(&query, &headers));
            t
        }
        Err(e) => return e.into_response(),
    };
    // Output negotiation before any work: a conversion the server cannot make is a 406.
    let output = match negotiation::output(&accept, negotiation::has_protobuf(&target.rt)) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let span = tracing::debug_span!("request", verb = %method, resource = target.rt.plural, namespace = target.namespace.as_deref().unwrap_or(""), name = target.name.as_deref().unwrap_or(""));
    let scale = target.subresource.as_deref() == Some("scale");
    // Decoding and merging megabytes can take a core for a while: such requests run where
    // they cannot hold up the reactor threads that serve probes and every other client.
    // (Lists stay on the reactor: they are spliced from stored bytes, and the hand-off
    // measured 7 -> 11 ms p50 for a 2,000-item list.)
    let heavy = body.len() > HEAVY_BODY_BYTES;
    let finalize = target.subresource.as_deref() == Some("finalize");
    let binding = target.subresource.as_deref() == Some("binding");
    let eviction = target.subresource.as_deref() == Some("eviction");
    let pod_log = is_pod_log(&target);
    let connect = crate::rest::pod_connect::is_connect(&target);
    // `serviceaccounts/token` is the only `token` subresource.
    let token_request = target.subresource.as_deref() == Some("token");
    let review = target.rt.strategy.not_stored();
    let user = caller.user;
    let upgrade = caller.upgrade;
    let dispatch = async {
        match (&method, target.name.is_some()) {
            (&Method::POST, true) if token_request => {
                crate::authn::token_request::create(&state, &target, &content_type, &body).await
            }
            (_, _) if token_request => Err(ApiError::method_not_served()),
            (&Method::POST, false) if review => {
                crate::authn::reviews::create(&state, &target, user.as_ref(), &content_type, &body)
                    .await
            }
            (_, _) if review => Err(ApiError::method_not_served()),
            (&Method::GET, true) if pod_log => {
                crate::rest::pod_log::get(&state, &target, &query).await
            }
            (_, _) if pod_log => Err(ApiError::method_not_served()),
            (&Method::GET | &Method::POST, true) if connect => {
                crate::rest::pod_connect::connect(
                    &state,
                    &target,
                    &method,
                    &headers,
                    uri.query().unwrap_or(""),
                    upgrade,
                )
                .await
            }
            (_, _) if connect => Err(ApiError::method_not_served()),
            (&Method::POST, true) if binding => {
                crate::rest::binding::create(&state, &target, &query, &content_type, &body).await
            }
            (_, _) if binding => Err(ApiError::method_not_served()),
            (&Method::POST, true) if eviction => {
                crate::rest::eviction::create(&state, &target, &query, &content_type, &body).await
            }
            (_, _) if eviction => Err(ApiError::method_not_served()),
            // Upstream's FinalizeREST is an Updater only: any other verb is not routed.
            (m, _) if finalize && m != Method::PUT => Err(ApiError::method_not_served()),
            (&Method::GET, true) if scale => crate::rest::scale::get(&state, &target).await,
            (&Method::PUT, true) if scale => {
                crate::rest::scale::update(&state, &target, &query, &content_type, &body).await
            }
            (&Method::PATCH, true) if scale => {
                crate::rest::scale::patch(&state, &target, &query, &content_type, &body).await
            }
            (&Method::GET, false) if is_watch => {
                let open = state.metrics.long_running(&target);
                let proto = output == Output::Protobuf;
                watch::watch(&state, &target, &query, &accept, proto, (permit, open)).await
            }
            (&Method::GET, false) => list::list(&state, &target, &query, &accept).await,
            (&Method::GET, true) => rest::get(&state, &target, &accept).await,
            (&Method::POST, false) => {
                rest::create(&state, &target, &query, &content_type, &body).await
            }
            (&Method::PUT, true) => {
                rest::update(&state, &target, &query, &content_type, &body).await
            }
            (&Method::PATCH, true) => {
                rest::patch::patch(&state, &target, &query, &content_type, &body).await
            }
            (&Method::DELETE, true) => rest::delete(&state, &target, &query, &body).await,
            (&Method::DELETE, false) if !target.rt.verbs().contains(&"deletecollection") => {
                Err(ApiError::method_not_served())
            }
            (&Method::DELETE, false) => {
                list::delete_collection(&state, &target, &query, &body).await
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                method, target.rt.plural
            ))),
        }
    }
    .instrument(span);
    let result = if heavy {
        off_reactor(dispatch).await
    } else {
        dispatch.await
    };
    let wrote = result.is_ok() && method != Method::GET;
    if wrote && target.rt.strategy.changes_served_types() {
        // The next request must already see the new API (discovery, OpenAPI, endpoints).
        if let Err(e) = crate::crds::controller::sync(&state).await {
            tracing::warn!(error = %e.message, "CRD sync after write failed");
        }
    }
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(w) = target
        .rt
        .custom
        .as_ref()
        .and_then(|c| c.deprecation_warning.as_deref())
    {
        resp = crate::encoding::field_validation::with_warnings(resp, &[w.to_string()]);
    }
    if output == Output::Protobuf && !is_watch {
        resp = to_protobuf(resp).await;
    } else if prefers_yaml(&accept) && !truthy(&query, "watch") {
        resp = to_yaml(resp).await;
    }
    let apply = content_type.starts_with("application/apply-patch");
    state.metrics.observe(
        &target,
        crate::telemetry::metrics::verb(&method, &target, is_watch, apply),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Whether the client's first choice is YAML (`Accept: application/yaml`).
fn prefers_yaml(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| {
        first
            .split(';')
            .next()
            .is_some_and(|m| m.trim() == "application/yaml")
    })
}

/// Re-encode a JSON response (an object, a list, a `Status`) as protobuf. A body with no
/// protobuf form (a Table, a subresource's own kind the table lacks) stays JSON, which
/// every protobuf client also accepts.
async fn to_protobuf(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("could not buffer the response").into_response();
    };
    // A large list (thousands of pods) takes a while to re-encode.
    let encoded = cpu_bound(bytes.len(), || {
        crate::limits::parse_stored::<serde_json::Value>(&bytes)
            .ok()
            .map(|value| (crate::encoding::protobuf_encode::encode(&value), value))
    });
    let Some((encoded, value)) = encoded else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    match encoded {
        Ok(pb) => {
            parts.headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(crate::encoding::protobuf::CONTENT_TYPE),
            );
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(pb))
        }
        Err(e) => {
            let kind = value
                .get("kind")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            tracing::debug!(kind, error = %e, "answering JSON: no protobuf form");
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
    }
}

/// Re-encode a JSON response as YAML.
async fn to_yaml(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("could not buffer the response").into_response();
    };
    let encoded = cpu_bound(bytes.len(), || {
        crate::limits::parse_stored::<serde_json::Value>(&bytes)
            .ok()
            .map(|value| serde_saphyr::to_string(&value))
    });
    let Some(encoded) = encoded else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    match encoded {
        Ok(y) => {
            parts.headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/yaml"),
            );
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(y))
        }
        Err(e) => ApiError::internal(format!("could not encode YAML: {e}")).into_response(),
    }
}
