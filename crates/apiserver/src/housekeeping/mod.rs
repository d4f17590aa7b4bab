//! The server's own background work: bootstrap objects, the event TTL sweep and the
//! namespace lifecycle (deleting a terminating namespace's contents).

pub mod bootstrap;
pub mod event_ttl;
pub mod namespaces;
