//! A kube-rs client over the in-process router (no socket, no TLS): how the built-in
//! scheduler, controllers and simulated nodes talk to this server, as ordinary API clients.

use axum::http::{header::AUTHORIZATION, Request};

use crate::serving::user_info::User;
use crate::{router, AppState};

/// Marks a request as coming from this process's own components. Only the clients below can
/// set it (it is a request extension, not a header), so no remote client can claim it; with it,
/// authentication takes the `User` extension the client set (`client_as`).
#[derive(Clone, Copy, Debug)]
pub struct InProcess;

/// A `kube::Client` whose requests enter the same router, middleware and admission as a
/// remote client's, as the admin (`system:admin` in `system:masters`: the API server's own
/// loops and simulated nodes), through `client_as` like every other component. Its
/// requests and watches take no places among clients' (`--max-requests-inflight`,
/// `--max-watches`), as upstream exempts its own privileged components: the controllers'
/// watches must not crowd out users, nor a crowd of users stop the controllers.
pub fn client(state: AppState) -> kube::Client {
    client_as(state, User::admin())
}

/// A `kube::Client` over the router whose requests are `user`'s: the user rides along as a
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
