//! The scheduling.k8s.io API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod priority_class;
