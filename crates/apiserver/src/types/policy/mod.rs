//! The policy API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod pod_disruption_budget;
