//! The Event recorder every loop uses: core/v1 Events aggregated by count, from the
//! `capstan-events` crate the node agent shares.

pub use capstan_events::*;
