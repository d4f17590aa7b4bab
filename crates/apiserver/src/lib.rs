//! capstan's Kubernetes API server: TLS serving, authentication, routing, discovery, the
//! REST verbs over the store, watch, patch, Tables, and the `Status` error shape.

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod crds;
pub mod discovery;
pub mod encoding;
pub mod housekeeping;
pub mod limits;
pub mod object;
pub mod patch;
pub mod rest;
pub mod routing;
pub mod serving;
pub mod status;
pub mod storage;
pub mod telemetry;
pub mod types;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::Router;
use capstan_store::Store;

pub use serving::in_process::client as in_process_client;
pub use serving::in_process::client_as as in_process_client_as;

use admission::service_alloc;
use discovery::openapi;
use serving::{auth, inflight, panic_guard, request_info};
use telemetry::{health, metrics};
use types::{builtin as builtin_types, cel_runner, registry};

/// What every handler can reach: one allocation every request shares. A clone is one
/// reference count; cloning the fields themselves (about twenty `Arc`s) happened several
/// times per request (each middleware layer and extractor takes its own copy).
#[derive(Clone)]
pub struct AppState(Arc<ServerState>);

impl std::ops::Deref for AppState {
    type Target = ServerState;

    fn deref(&self) -> &ServerState {
        &self.0
    }
}

/// The fields of `AppState`.
#[derive(Clone)]
pub struct ServerState {
    pub store: Arc<dyn Store>,
    pub admin_token: Arc<str>,
    pub registry: registry::Registry,
    /// Built on first use and again after the set of served types changes (CRDs): a
    /// server that is never asked for OpenAPI or a write does not pay for it at start.
    openapi: Arc<std::sync::RwLock<Option<Arc<openapi::OpenApi>>>>,
    pub limiter: inflight::Limiter,
    /// One CRD reconciliation at a time (handlers and the loop both run it).
    pub crd_sync: Arc<tokio::sync::Mutex<()>>,
    /// Where Service ClusterIPs and NodePorts come from.
    pub service_ranges: Arc<service_alloc::Ranges>,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_every: std::time::Duration,
    /// Where custom resources' CEL rules run (deadline, concurrency cap).
    pub cel: cel_runner::CelRunner,
    /// Request counts and latencies for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The admission plugins every write passes.
    pub admission: Arc<admission::Chain>,
    /// How this server connects to kubelets (`pods/log`); None: it cannot.
    pub kubelet_client: Option<rest::node_proxy::KubeletClientTls>,
    /// Connections node agents opened to be reached through (agents without an endpoint).
    pub tunnels: Arc<rest::node_tunnel::TunnelPool>,
    /// Issues and checks service-account tokens; None: no key (TokenRequest is refused).
    pub tokens: Option<Arc<serving::token_authenticator::TokenAuthenticator>>,
    /// The RBAC index every request is authorized against.
    pub authz: Arc<authz::Authorizer>,
    /// The audit policy and log; None: nothing is audited.
    pub audit: Option<Arc<audit::Auditor>>,
}

impl AppState {
    /// The fields to set while building (`with_*`): a state not yet shared is changed in
    /// place; one already shared is copied first, as the builders' by-value API promises.
    fn fields(&mut self) -> &mut ServerState {
        Arc::make_mut(&mut self.0)
    }

    pub fn new(store: Arc<dyn Store>, admin_token: &str) -> Self {
        let registry = registry::Registry::new(builtin_types::builtin());
        let openapi = Arc::new(std::sync::RwLock::new(None));
        AppState(Arc::new(ServerState {
            store,
            admin_token: admin_token.into(),
            registry,
            openapi,
            limiter: inflight::Limiter::new(DEFAULT_MAX_INFLIGHT),
            crd_sync: Arc::new(tokio::sync::Mutex::new(())),
            service_ranges: Arc::new(service_alloc::Ranges::default()),
            bookmark_every: std::time::Duration::from_secs(60),
            cel: cel_runner::CelRunner::default(),
            metrics: Arc::new(metrics::Metrics::default()),
            admission: Arc::new(admission::Chain::default()),
            kubelet_client: None,
            tunnels: Arc::default(),
            // A process-lifetime key until the server hands it the data dir's.
            tokens: match serving::service_account_key::SigningKey::generate() {
                Ok(key) => Some(Arc::new(
                    serving::token_authenticator::TokenAuthenticator::new(key),
                )),
                Err(e) => {
                    tracing::error!(error = %e, "no service account signing key");
                    None
                }
            },
            authz: Arc::new(authz::Authorizer::default()),
            audit: None,
        }))
    }

    /// Audit requests as `policy` says, into the log `log` describes.
    pub fn with_audit(
        mut self,
        policy: audit::policy::Policy,
        log: audit::writer::LogOptions,
    ) -> Result<Self, audit::writer::WriterError> {
        let writer = audit::writer::Writer::start(
            log,
            self.metrics.audit_events.clone(),
            self.metrics.audit_dropped.clone(),
        )?;
        self.fields().audit = Some(Arc::new(audit::Auditor { policy, writer }));
        Ok(self)
    }

    /// Sign and check service-account tokens with `key` (the data dir's).
    pub fn with_service_account_key(
        mut self,
        key: serving::service_account_key::SigningKey,
    ) -> Self {
        self.fields().tokens = Some(Arc::new(
            serving::token_authenticator::TokenAuthenticator::new(key),
        ));
        self
    }

    /// Lets `pods/log` reach kubelets with this TLS client configuration.
    pub fn with_kubelet_client(mut self, tls: rest::node_proxy::KubeletClientTls) -> Self {
        self.fields().kubelet_client = Some(tls);
        self
    }

    /// The current OpenAPI documents.
    pub fn openapi(&self) -> Arc<openapi::OpenApi> {
        if let Some(doc) = self
            .openapi
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return doc;
        }
        let mut slot = self.openapi.write().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| Arc::new(openapi::OpenApi::build(&self.registry)))
            .clone()
    }

    /// Forget the OpenAPI documents (the served types changed); the next use rebuilds them.
    pub fn rebuild_openapi(&self) {
        *self.openapi.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn with_service_ranges(mut self, ranges: service_alloc::Ranges) -> Self {
        self.fields().service_ranges = Arc::new(ranges);
        self
    }

    pub fn with_bookmark_interval(mut self, every: std::time::Duration) -> Self {
        self.fields().bookmark_every = every.max(std::time::Duration::from_millis(100));
        self
    }

    pub fn with_cel_runner(mut self, runner: cel_runner::CelRunner) -> Self {
        self.fields().cel = runner;
        self
    }

    /// Cap on requests in flight (watches excluded); more get 429.
    pub fn with_max_inflight(mut self, n: usize) -> Self {
        self.fields().limiter = inflight::Limiter::new(n);
        self
    }

    /// Caps on requests in flight and, separately, on open watches; more get 429.
    pub fn with_limits(mut self, max_inflight: usize, max_watches: usize) -> Self {
        self.fields().limiter = inflight::Limiter::with_watches(max_inflight, max_watches);
        self
    }
}

/// Upstream's default --max-requests-inflight.
pub const DEFAULT_MAX_INFLIGHT: usize = 400;

/// Upstream's limit on a request body.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

async fn openapi_root(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(state.openapi().root())
}

async fn openapi_doc(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.openapi().doc(&path) {
        Some(d) => axum::Json(d.clone()).into_response(),
        None => status::ApiError::path_not_found(&format!("/openapi/v3/{path}")).into_response(),
    }
}

/// A `timeout` query parameter Go cannot parse is a 400 on any request, as upstream's
/// WithRequestDeadline answers it.
async fn request_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match request_info::check_timeout_param(req.uri().query()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The whole HTTP surface; usable in-process (e.g. by a kube::Client) without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(health::version))
        .route("/healthz", get(health::healthz))
        .route("/healthz/{name}", get(health::healthz_check))
        .route("/livez", get(health::livez))
        .route("/livez/{name}", get(health::livez_check))
        .route("/readyz", get(health::readyz))
        .route("/readyz/{name}", get(health::readyz_check))
        .route("/metrics", get(metrics::serve))
        .route("/openapi/v2", get(discovery::openapi_v2::serve))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route(
            "/capstan.io/v1/nodes/{name}/tunnel",
            get(rest::node_tunnel::accept),
        )
        // `/api/` and `/apis/` are the same documents as without the slash (a wildcard
        // does not match the empty tail, so they are routed explicitly).
        .route("/api", any(routing::handle))
        .route("/api/", any(routing::handle))
        .route("/api/{*rest}", any(routing::handle))
        .route("/apis", any(routing::handle))
        .route("/apis/", any(routing::handle))
        .route("/apis/{*rest}", any(routing::handle))
        .fallback(
            |uri: axum::http::Uri| async move { status::ApiError::path_not_found(uri.path()) },
        )
        // Bodies are read (and limited) in routing, which answers 413 with a Status.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.limiter.clone(),
            inflight::limit,
        ))
        // Authorization (with impersonation) runs right after authentication, inside the
        // audit layer so refusals are audited with their user.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        // Inside authentication (it needs the user), around everything that can warn.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::layer::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Upstream's request-deadline filter sits outside authentication.
        .layer(axum::middleware::from_fn(request_deadline))
        .layer(axum::middleware::from_fn(panic_guard::catch))
        .with_state(state)
}
