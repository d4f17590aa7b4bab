//! The batch API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod cron_job;
pub mod job;
