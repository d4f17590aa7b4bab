//! Reverse tunnels from node agents: `GET /capstan.io/v1/nodes/{name}/tunnel` upgraded to
//! `capstan-tunnel` by the node itself, parked per node until `pods/log`, `exec`, `attach` or
//! `portforward` takes one and speaks HTTP/1.1 to the agent's kubelet endpoint over it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::serving::request_info::RequestInfo;
use crate::serving::user_info::User;
use crate::status::ApiError;
use crate::AppState;

/// The `Upgrade` protocol token of a tunnel.
pub const PROTOCOL: &str = "capstan-tunnel";
/// Parked connections one node may hold (its agent keeps 2; the rest absorbs reconnects).
pub const MAX_PER_NODE: usize = 8;
/// Parked connections all nodes together may hold.
pub const MAX_TOTAL: usize = 8192;
/// After a node's last parked connection closed unused (its agent stopped, or the network
/// between us broke), a request waits this long for the agent to come back before failing.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// The tunnel path for `node`.
pub fn path(node: &str) -> String {
    format!("/capstan.io/v1/nodes/{node}/tunnel")
}

/// Whether `path` is a tunnel request: it is authorized here by identity, not by RBAC.
pub fn is_tunnel_path(path: &str) -> bool {
    path.strip_prefix("/capstan.io/v1/nodes/")
        .and_then(|rest| rest.strip_suffix("/tunnel"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("node {node:?} already holds {MAX_PER_NODE} tunnel connections")]
    NodeFull { node: String },
    #[error("this server already holds {MAX_TOTAL} tunnel connections")]
    ServerFull,
    #[error("the agent of node {node:?} has no tunnel connection to this server (waited {waited_secs:.1}s)")]
    NoneConnected { node: String, waited_secs: f64 },
}

impl From<TunnelError> for ApiError {
    fn from(e: TunnelError) -> ApiError {
        let code = match e {
            TunnelError::NodeFull { .. } | TunnelError::ServerFull => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    e.to_string(),
                )
            }
            TunnelError::NoneConnected { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(code, "ServiceUnavailable", e.to_string())
    }
}

/// A parked connection: asking it (a reply channel) hands its stream over.
struct Parked {
    id: u64,
    take: oneshot::Sender<oneshot::Sender<Upgraded>>,
}

#[derive(Default)]
struct NodeTunnels {
    idle: Vec<Parked>,
    /// Accepted (101 sent), not parked yet.
    pending: usize,
    /// When the last idle connection closed without being taken; None once one parks.
    closed_at: Option<Instant>,
    /// Signalled (one permit) when a connection parks.
    arrived: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeTunnels>,
    /// Idle plus pending, over all nodes.
    held: usize,
    next_id: u64,
}

/// The parked tunnel connections of every node.
#[derive(Default)]
pub struct TunnelPool {
    inner: Mutex<Inner>,
}

/// A place reserved for a connection being upgraded; given back unless it parks.
pub struct Reservation {
    pool: Arc<TunnelPool>,
    node: String,
    parked: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.parked {
            return;
        }
        let mut inner = self.pool.lock();
        inner.held = inner.held.saturating_sub(1);
        if let Some(n) = inner.nodes.get_mut(&self.node) {
            n.pending = n.pending.saturating_sub(1);
        }
    }
}

impl TunnelPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection of `node`, within the bounds.
    pub fn reserve(self: &Arc<Self>, node: &str) -> Result<Reservation, TunnelError> {
        let mut inner = self.lock();
        if inner.held >= MAX_TOTAL {
            return Err(TunnelError::ServerFull);
        }
        let n = inner.nodes.entry(node.to_string()).or_default();
        if n.idle.len() + n.pending >= MAX_PER_NODE {
            return Err(TunnelError::NodeFull { node: node.into() });
        }
        n.pending += 1;
        inner.held += 1;
        Ok(Reservation {
            pool: self.clone(),
            node: node.to_string(),
            parked: false,
        })
    }

    /// Parks the upgraded `stream` until it is taken or closes.
    fn park(self: &Arc<Self>, mut reservation: Reservation, stream: Upgraded) {
        let (take, asked) = oneshot::channel();
        let node = reservation.node.clone();
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            let n = inner.nodes.entry(node.clone()).or_default();
            n.pending = n.pending.saturating_sub(1);
            n.idle.push(Parked { id, take });
            n.closed_at = None;
            n.arrived.notify_one();
            id
        };
        reservation.parked = true;
        tracing::debug!(node, id, "tunnel connection parked");
        tokio::spawn(watch_parked(self.clone(), node, id, stream, asked));
    }

    /// Drops a parked connection that closed before anyone took it.
    fn forget(&self, node: &str, id: u64) {
        let mut inner = self.lock();
        let Some(n) = inner.nodes.get_mut(node) else {
            return;
        };
        let Some(at) = n.idle.iter().position(|p| p.id == id) else {
            return;
        };
        n.idle.remove(at);
        if n.idle.is_empty() && n.pending == 0 {
            n.closed_at = Some(Instant::now());
        }
        inner.held = inner.held.saturating_sub(1);
    }

    /// Whether `node`'s agent has tunnel connections here (idle or arriving).
    pub fn has_tunnels(&self, node: &str) -> bool {
        self.lock()
            .nodes
            .get(node)
            .is_some_and(|n| !n.idle.is_empty() || n.pending > 0)
    }

    /// Connections parked for `node` now (for tests and metrics).
    pub fn idle(&self, node: &str) -> usize {
        self.lock().nodes.get(node).map_or(0, |n| n.idle.len())
    }

    /// Takes a parked connection of `node`, waiting up to `within` for one to arrive (less
    /// when the node's connections all closed unused: its agent is likely gone).
    pub async fn take(&self, node: &str, within: Duration) -> Result<Upgraded, TunnelError> {
        let started = Instant::now();
        let mut deadline = started + within;
        loop {
            let (parked, arrived) = {
                let mut inner = self.lock();
                let n = inner.nodes.entry(node.to_string()).or_default();
                let parked = n.idle.pop();
                if parked.is_none() && n.pending == 0 {
                    if let Some(closed) = n.closed_at {
                        deadline = deadline.min(closed + RECONNECT_GRACE);
                    }
                }
                let arrived = n.arrived.clone();
                if parked.is_some() {
                    inner.held = inner.held.saturating_sub(1);
                }
                (parked, arrived)
            };
            if let Some(parked) = parked {
                let (reply, stream) = oneshot::channel();
                // A connection that closed a moment ago has no one left to answer: next.
                if parked.take.send(reply).is_ok() {
                    if let Ok(stream) = stream.await {
                        tracing::debug!(node, id = parked.id, "tunnel connection taken");
                        return Ok(stream);
                    }
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, arrived.notified())
                .await
                .is_err()
            {
                return Err(TunnelError::NoneConnected {
                    node: node.into(),
                    waited_secs: started.elapsed().as_secs_f64(),
                });
            }
        }
    }
}

/// Holds a parked connection: hands it to whoever asks, or drops it from the pool when the
/// agent closes it (an agent sends nothing on a parked connection; bytes are a fault too).
async fn watch_parked(
    pool: Arc<TunnelPool>,
    node: String,
    id: u64,
    stream: Upgraded,
    asked: oneshot::Receiver<oneshot::Sender<Upgraded>>,
) {
    let mut io = TokioIo::new(stream);
    let mut probe = [0u8; 1];
    tokio::select! {
        biased;
        reply = asked => {
            if let Ok(reply) = reply {
                let _ = reply.send(io.into_inner());
            }
        }
        read = io.read(&mut probe) => {
            match read {
                Ok(0) => tracing::debug!(node, id, "parked tunnel connection closed by the agent"),
                Ok(_) => tracing::warn!(node, id, "the agent sent bytes on a parked tunnel connection: dropped"),
                Err(e) => tracing::debug!(node, id, error = %e, "parked tunnel connection failed"),
            }
            pool.forget(&node, id);
        }
    }
}

/// Whether `user` is the node `node` itself.
fn is_node(user: &User, node: &str) -> bool {
    user.0.username.strip_prefix("system:node:") == Some(node)
        && user.0.groups.iter().any(|g| g == "system:nodes")
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `GET /capstan.io/v1/nodes/{name}/tunnel`: only `system:node:{name}` (group
/// `system:nodes`) may open it; answered with 101 and parked.
pub async fn accept(
    State(state): State<AppState>,
    Path(node): Path<String>,
    mut req: Request,
) -> Response {
    let username = req
        .extensions()
        .get::<User>()
        .map(|u| u.0.username.clone())
        .unwrap_or_else(|| "system:anonymous".into());
    let allowed = req
        .extensions()
        .get::<User>()
        .is_some_and(|u| is_node(u, &node));
    if !allowed {
        tracing::info!(user = %username, node, "tunnel refused: not the node itself");
        let info = RequestInfo::new(req.method().as_str(), req.uri().path(), &HashMap::new());
        return crate::serving::forbidden::forbidden(
            &info,
            &username,
            &format!("only system:node:{node} in group system:nodes may open this node's tunnel"),
        )
        .into_response();
    }
    if req.version() != Version::HTTP_11
        || !header_has(&req, header::CONNECTION, "upgrade")
        || !header_has(&req, header::UPGRADE, PROTOCOL)
    {
        return ApiError::bad_request(format!(
            "a tunnel is an HTTP/1.1 upgrade: Connection: Upgrade, Upgrade: {PROTOCOL}"
        ))
        .into_response();
    }
    let reservation = match state.tunnels.reserve(&node) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(node, error = %e, "tunnel refused");
            return ApiError::from(e).into_response();
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let pool = state.tunnels.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(stream) => pool.park(reservation, stream),
            Err(e) => {
                tracing::debug!(node = %reservation.node, error = %e, "tunnel upgrade failed")
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_paths_name_one_node() {
        assert!(is_tunnel_path("/capstan.io/v1/nodes/n1/tunnel"));
        assert!(is_tunnel_path(&path("worker-2")));
        assert!(!is_tunnel_path("/capstan.io/v1/nodes//tunnel"));
        assert!(!is_tunnel_path("/capstan.io/v1/nodes/a/b/tunnel"));
        assert!(!is_tunnel_path("/api/v1/nodes/n1/proxy"));
    }

    #[test]
    fn places_are_bounded_per_node_and_given_back() {
        let pool = Arc::new(TunnelPool::default());
        let held: Vec<Reservation> = (0..MAX_PER_NODE)
            .map(|_| pool.reserve("n1").expect("a place"))
            .collect();
        assert!(matches!(
            pool.reserve("n1"),
            Err(TunnelError::NodeFull { .. })
        ));
        assert!(
            pool.reserve("n2").is_ok(),
            "another node has its own places"
        );
        assert!(pool.has_tunnels("n1"));
        drop(held);
        assert!(!pool.has_tunnels("n1"));
        assert!(pool.reserve("n1").is_ok());
    }

    #[tokio::test]
    async fn taking_from_a_node_without_tunnels_fails_after_the_wait() {
        let pool = TunnelPool::default();
        let started = Instant::now();
        let err = pool
            .take("gone", Duration::from_millis(50))
            .await
            .expect_err("nothing parked");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(matches!(err, TunnelError::NoneConnected { .. }));
        assert_eq!(ApiError::from(err).code, StatusCode::SERVICE_UNAVAILABLE);
    }
}
