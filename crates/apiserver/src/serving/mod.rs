//! Serving: TLS, authentication (admin token, client certificates, service-account JWTs),
//! request deadlines, the places for requests in flight, and the in-process client.

pub mod auth;
pub mod bootstrap_token;
pub mod client_cert;
pub mod client_cert_der;
pub mod csr_signer;
pub mod forbidden;
pub mod in_process;
pub mod inflight;
pub mod panic_guard;
pub mod pki;
pub mod request_body;
pub mod request_info;
pub mod serve;
pub mod service_account_jwt;
pub mod service_account_key;
pub mod token_authenticator;
pub mod user_info;
