//! Admission: the ordered plugins every write passes after decoding and before storage —
//! mutating first, then validating — each declaring the operations and resources it handles.

pub mod namespace_lifecycle;
pub mod priority;
pub mod service_alloc;
