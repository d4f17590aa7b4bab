//! Structural schemas (the OpenAPI v3 subset a CustomResourceDefinition carries): parsing,
//! the structural rules a CRD must obey, value validation, pruning and defaulting.

mod admission_cel;
mod cel;
mod format;
mod path;
mod pattern;
mod prune;
mod schema;
mod structural;
mod validate;

pub use admission_cel::{Activation, Expression, Outcome};
pub use cel::{cel_compile_error, check_rules, CelRules};
pub use format::cidr as is_cidr;
pub use path::FieldPath;
pub use prune::{apply_defaults, prune};
pub use schema::{Bounds, Properties, Schema, SchemaError};
pub use structural::check_structural;
pub use validate::{validate, Violation, ViolationKind};
