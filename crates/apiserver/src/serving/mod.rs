//! Serving: TLS and HTTP connections, authentication, request deadlines, the places
//! for requests in flight, and the in-process client (the same router without a socket).

pub mod auth;
pub mod in_process;
pub mod inflight;
pub mod panic_guard;
pub mod pki;
pub mod request_info;
pub mod serve;
