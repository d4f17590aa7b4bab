//! The batch API group: one module per kind (its strategy), plus what several of
//! its kinds share.

pub mod cron_job;
mod cron_schedule;
pub mod job;
