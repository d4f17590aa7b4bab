//! The autoscaling API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod horizontal_pod_autoscaler;
