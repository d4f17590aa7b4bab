//! A kube-rs client over the in-process router (no socket, no TLS): how the built-in
//! scheduler, controllers and simulated nodes talk to this server, as ordinary API clients.

use axum::http::{header::AUTHORIZATION, HeaderValue, Request};

use crate::{router, AppState};

/// Marks a request as coming from this process's own components. Only `client` below can
/// set it (it is a request extension, not a header), so no remote client can claim it.
#[derive(Clone, Copy, Debug)]
pub struct InProcess;

/// A `kube::Client` whose requests enter the same router, middleware and admission as a
/// remote client's, authenticated as the admin (the token never leaves the process). Its
/// requests and watches take no places among clients' (`--max-requests-inflight`,
/// `--max-watches`), as upstream exempts its own privileged components: the controllers'
/// watches must not crowd out users, nor a crowd of users stop the controllers.
pub fn client(state: AppState) -> kube::Client {
    let bearer = HeaderValue::from_str(&format!("Bearer {}", state.admin_token))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<kube::client::Body>| {
            req.headers_mut().insert(AUTHORIZATION, bearer.clone());
            req.extensions_mut().insert(InProcess);
            req
        })
        .service(router(state));
    kube::Client::new(svc, "default")
}
