//! Patches and server-side apply as pure functions over objects: JSON and merge patches,
//! strategic merge, apply's merge and managed-fields ownership.

pub mod apply;
pub mod managed_fields;
pub mod merge;
pub mod strategic_merge;
