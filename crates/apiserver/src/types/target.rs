//! The resource a request addresses, as routing resolved it: type, namespace, name,
//! subresource and the field manager of a write.

use crate::types::registry::ResourceType;

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: std::sync::Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Who writes (`fieldManager`, else the client's user agent); `None` for the server's
    /// own writes and for apply, which records ownership itself.
    pub manager: Option<String>,
}
