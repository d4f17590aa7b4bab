//! The discovery.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod endpoint_slice;
