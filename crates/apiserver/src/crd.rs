//! CustomResourceDefinitions: validating a CRD as upstream does, and turning an established
//! one into registry entries (one per served version) with its schema, subresources, columns.

use serde_json::Value;

/// `scale` subresource paths (`.spec.replicas` style JSON paths).
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One additionalPrinterColumn.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What a served version of a CRD adds to its registry entry.
#[derive(Debug, Clone)]
pub struct CustomVersion {
    pub crd_name: String,
    /// The version objects are stored as; others are converted (`None` strategy) on the way.
    pub storage_version: String,
    /// The version's `openAPIV3Schema`, as given.
    pub schema_json: Option<Value>,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<PrinterColumn>,
    /// Sent as a `Warning` header on every request to this version.
    pub deprecation_warning: Option<String>,
}
