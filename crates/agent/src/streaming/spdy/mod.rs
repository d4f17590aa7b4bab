//! SPDY/3.1 as kubectl's streaming protocols use it: frames, compressed header blocks and a
//! server-side session; written here because no server-side SPDY crate exists.

pub mod frame;
pub mod header_block;
pub mod session;
