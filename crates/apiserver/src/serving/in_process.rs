//! A kube-rs client over the in-process router (no socket, no TLS): how the built-in
//! scheduler, controllers and simulated nodes talk to this server, as ordinary API clients.

use axum::http::{header::AUTHORIZATION, HeaderValue, Request};

use crate::serving::user_info::User;
use crate::{router, AppState};

/// Marks a request as coming from this process's own components. Only the clients below can
/// set it (it is a request extension, not a header), so no remote client can claim it; with it,
/// authentication takes the `User` extension the client set (`client_as`).
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

/// A `kube::Client` like `client`'s whose requests are `user`'s: the user rides along as a
/// request extension (no token), so RBAC and audit see the component's own identity (the
/// scheduler as `system:kube-scheduler`, each controller as its service account, the node
/// agent as its node), as upstream's components authenticate with their own credentials.
pub fn client_as(state: AppState, user: User) -> kube::Client {
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<kube::client::Body>| {
            // A header could not claim a user, but drop any Authorization a caller set so
            // the extension is the only credential.
            req.headers_mut().remove(AUTHORIZATION);
            req.extensions_mut().insert(InProcess);
            req.extensions_mut().insert(user.clone());
            req
        })
        .service(router(state));
    kube::Client::new(svc, "default")
}
