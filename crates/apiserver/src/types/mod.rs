//! Types: the registry of served resources and everything known about each kind —
//! defaults, validation, printing, field selectors — plus custom resources' schemas and CEL.

pub mod builtin;
pub mod builtin_defaults;
pub mod builtin_printers;
pub mod builtin_validation;
pub mod cel_runner;
pub mod crd;
pub mod defaults;
pub mod jsonpath;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod validation;

pub mod target;

pub use target::Target;
