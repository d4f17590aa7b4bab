//! The server's own background work: bootstrap objects (the system namespaces among them).
//! (The event TTL sweep is a controller: `capstan_controllers::event_ttl`.)

pub mod bootstrap;
pub mod namespaces;
