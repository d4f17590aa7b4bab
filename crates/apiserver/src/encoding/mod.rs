//! The wire: protobuf envelopes, typed decoding of built-in types, unknown and duplicate
//! fields per `fieldValidation`, warnings, and the table of known fields.

pub mod duplicate_fields;
pub mod field_validation;
pub mod k8s_fields;
pub mod negotiation;
pub mod protobuf;
pub mod protobuf_encode;
