//! Authorization, as kube-apiserver's `--authorization-mode=Node,RBAC` decides it: after
//! authentication (and impersonation), every request is allowed for `system:masters`, by the
//! Node authorizer (a node's reads of what its pods use), or by an RBAC rule bound to the
//! user, else refused with upstream's 403.

pub mod bootstrap_policy;
pub mod controller_policy;
pub mod escalation;
pub mod impersonation;
pub mod node_authorizer;
pub mod policy_index;
pub mod rbac;
pub mod reviews;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use futures::StreamExt;

use crate::authz::policy_index::{Snapshot, Stored, RBAC_PREFIX};
use crate::serving::request_info::{decode_path, RequestInfo};
use crate::serving::user_info::{User, UserInfo};
use crate::status::ApiError;
use crate::AppState;

/// Upstream's privileged group: always allowed, whatever RBAC says.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// What the authorizer says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        reason: String,
    },
    /// No rule allows it; `reason` is RBAC's (resolution errors), often empty.
    Deny {
        reason: String,
    },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

pub fn is_privileged(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == PRIVILEGED_GROUP)
}

/// The RBAC index and how it is kept current.
#[derive(Default)]
pub struct Authorizer {
    snapshot: RwLock<Arc<Snapshot>>,
    /// One reload at a time (concurrent refusals wait for it and use its result), and when
    /// a refusal last forced one.
    reloading: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// Refusals force at most one reload per this interval: a flood of refused requests on a
/// busy store cannot turn into a flood of full reads (each refusal may wait this long).
const FORCED_RELOAD_EVERY: Duration = Duration::from_millis(50);

impl Authorizer {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The decision on the current index.
    pub fn decide(&self, user: &UserInfo, info: &RequestInfo) -> Decision {
        if is_privileged(user) {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let req = rbac::Request::new(info);
        match self.snapshot().authorize(user, &req) {
            Ok(reason) => Decision::Allow { reason },
            Err(reason) => Decision::Deny { reason },
        }
    }

    /// `decide`, but a refusal is checked again once the index has caught up with the
    /// store: a client that just wrote a binding is allowed by it on its next request.
    pub async fn decide_current(
        &self,
        state: &AppState,
        user: &UserInfo,
        info: &RequestInfo,
    ) -> Decision {
        let first = self.decide(user, info);
        if first.allowed() {
            return first;
        }
        match self.catch_up(state).await {
            Ok(true) => self.decide(user, info),
            Ok(false) => first,
            Err(e) => {
                tracing::warn!(error = %e.message, "could not refresh the RBAC index");
                first
            }
        }
    }

    /// Reload when the store has moved past the index; whether a reload happened.
    async fn catch_up(&self, state: &AppState) -> Result<bool, ApiError> {
        let seen = self.snapshot().revision;
        if state.store.current_revision().await? <= seen {
            return Ok(false);
        }
        let mut last_forced = self.reloading.lock().await;
        if self.snapshot().revision > seen {
            // Someone else reloaded while this one waited.
            return Ok(true);
        }
        if let Some(wait) = last_forced.and_then(|t| FORCED_RELOAD_EVERY.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
            if self.snapshot().revision > seen {
                // The watch caught up meanwhile.
                return Ok(true);
            }
        }
        self.reload(state).await?;
        *last_forced = Some(std::time::Instant::now());
        Ok(true)
    }

    /// Read every RBAC object and swap in a new index.
    pub async fn reload(&self, state: &AppState) -> Result<(), ApiError> {
        let range = state
            .store
            .range(RangeRequest::new(KeyRange::prefix(Bytes::from_static(
                RBAC_PREFIX.as_bytes(),
            ))))
            .await?;
        let mut objects = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some((plural, namespace)) = policy_index::parse_key(&kv.key) else {
                continue;
            };
            match crate::storage::decode_stored(kv) {
                Ok(obj) => objects.push(Stored {
                    plural,
                    namespace,
                    obj,
                }),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e.message, "unreadable RBAC object skipped")
                }
            }
        }
        let snap = Snapshot::build(range.revision, &objects);
        let mut slot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        if slot.revision <= snap.revision {
            *slot = Arc::new(snap);
        }
        tracing::debug!(
            revision = range.revision,
            objects = objects.len(),
            "RBAC index reloaded"
        );
        Ok(())
    }
}

/// Keep `state.authz` current: load it, then reload after each burst of RBAC changes.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let from = match state.store.current_revision().await {
                Ok(r) => r,
                // The store is closed: the server is stopping.
                Err(_) => return,
            };
            if let Err(e) = state.authz.reload(&state).await {
                tracing::warn!(error = %e.message, "RBAC index load failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let watch = state
                .store
                .watch(
                    KeyRange::prefix(Bytes::from_static(RBAC_PREFIX.as_bytes())),
                    from + 1,
                )
                .await;
            match watch {
                Ok(mut w) => match w.next().await {
                    Some(Ok(_)) => {
                        // Let a burst of changes settle into one reload.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                },
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    })
}

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The request's attributes as the authorizer reads them.
pub fn request_info(req: &Request) -> Result<RequestInfo, ApiError> {
    let path = decode_path(req.uri().path())?;
    Ok(RequestInfo::new(
        req.method().as_str(),
        &path,
        &query_map(req.uri()),
    ))
}

/// The layer after authentication: impersonation, then the decision, then (for writes of
/// RBAC objects) escalation prevention. Requests authentication let through without a user
/// (the public health endpoints) pass untouched.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(requester) = req.extensions().get::<User>().cloned() else {
        return next.run(req).await;
    };
    let user = match impersonation::impersonate(&state, &requester, req.headers()).await {
        Ok(Some(as_user)) => {
            impersonation::strip_headers(req.headers_mut());
            req.extensions_mut().insert(as_user.clone());
            as_user
        }
        Ok(None) => requester,
        Err(e) => return e.into_response(),
    };
    // A node's tunnel is authorized by identity (only the node itself, as upstream's Node
    // authorizer would), in its handler: not even system:masters may park one.
    if crate::rest::node_tunnel::is_tunnel_path(req.uri().path()) {
        return next.run(req).await;
    }
    if is_privileged(&user.0) {
        return next.run(req).await;
    }
    let info = match request_info(&req) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    // Upstream's order: the Node authorizer, then RBAC.
    let in_process = req
        .extensions()
        .get::<crate::serving::in_process::InProcess>()
        .is_some();
    let node_reason = match node_authorizer::decide(&state, &user.0, &info).await {
        Ok(node_authorizer::Verdict::Allow) => return next.run(req).await,
        Ok(node_authorizer::Verdict::NotMine) => None,
        Ok(node_authorizer::Verdict::NoOpinion(why)) => Some(why),
        Err(e) => return e.into_response(),
    };
    match state.authz.decide_current(&state, &user.0, &info).await {
        Decision::Allow { .. } => {}
        Decision::Deny { reason } => {
            let reason = match node_reason {
                Some(why) if reason.is_empty() => why,
                _ => reason,
            };
            if in_process {
                // A built-in component lacks a right its role should give: a bug to see.
                tracing::warn!(user = %user.0.username, verb = %info.verb, resource = %info.resource, subresource = %info.subresource, namespace = %info.namespace, name = %info.name, "built-in component forbidden");
            } else {
                tracing::debug!(user = %user.0.username, verb = %info.verb, resource = %info.resource, namespace = %info.namespace, "forbidden");
            }
            return crate::serving::forbidden::forbidden(&info, &user.0.username, &reason)
                .into_response();
        }
    }
    if escalation::applies(&info) {
        let (parts, body) = req.into_parts();
        // Read as routing reads it (bounded in size and time); it is handed on below.
        let body = match crate::serving::request_body::read_body(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Err(e) = escalation::check(&state, &user.0, &info, content_type, &body).await {
            return e.into_response();
        }
        req = Request::from_parts(parts, axum::body::Body::from(body));
    }
    next.run(req).await
}
