//! The certificates.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share (the parsed `spec.request`).

pub mod certificate_signing_request;
pub mod request;
