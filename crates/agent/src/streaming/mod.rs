//! The kubelet's streaming endpoints: exec, attach and port-forward sessions served on upgraded
//! connections, over SPDY/3.1 or WebSocket (`channel.k8s.io` or SPDY tunnelled in WebSocket).

pub mod attach;
pub mod endpoints;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;
