//! Types: the registry of served resources and everything known about each kind —
//! defaults, validation, printing, field selectors — plus custom resources' schemas and CEL.

pub mod admissionregistration;
pub mod apiextensions;
pub mod apiregistration;
pub mod apps;
pub mod authentication;
pub mod autoscaling;
pub mod batch;
pub mod builtin;
pub mod cel_runner;
pub mod certificates;
pub mod coordination;
pub mod core;
pub mod crd;
pub mod custom;
pub mod defaults;
pub mod definitions;
pub mod discovery;
pub mod events;
pub mod jsonpath;
pub mod networking;
pub mod node;
pub mod policy;
pub mod quantity;
pub mod rbac;
pub mod registry;
pub mod scheduling;
pub mod selector;
pub mod shared;
pub mod storage;
pub mod strategy;
pub mod validation;

pub mod target;

pub use target::Target;
