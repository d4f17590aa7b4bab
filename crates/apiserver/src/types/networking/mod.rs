//! The networking.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod ingress;
pub mod ingress_class;
pub mod network_policy;
