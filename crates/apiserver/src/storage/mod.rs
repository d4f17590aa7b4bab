//! Storage access: keys of objects in the store, stored bytes to objects and back, and the
//! resourceVersion spliced into stored bytes without a parse.

pub mod raw_object;
