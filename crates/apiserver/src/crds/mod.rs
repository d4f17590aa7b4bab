//! Custom resource definitions at run time: the loop that turns stored CRDs into served
//! types (registry, discovery, OpenAPI), their conditions and the cleanup of deleted ones.

pub mod controller;
