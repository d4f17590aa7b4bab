//! The server's own background work: bootstrap objects (the system namespaces among them)
//! and the Local APIServices of what it serves.
//! (The event TTL sweep is a controller: `capstan_controllers::event_ttl`.)

pub mod apiservices;
pub mod bootstrap;
pub mod namespaces;
