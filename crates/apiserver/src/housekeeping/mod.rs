//! The server's own background work: bootstrap objects (the system namespaces among them)
//! and the event TTL sweep.

pub mod bootstrap;
pub mod event_ttl;
pub mod namespaces;
