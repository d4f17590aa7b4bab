//! The registry: one entry per served resource type (scope, names, verbs, printer columns),
//! looked up by group/version/plural. Built-in types are static entries; CRDs will add
//! entries of the same shape at run time.

use std::sync::Arc;

/// How a resource prints in `kubectl get` (the Table's columns after NAME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    /// NAME AGE
    Default,
    /// NAME STATUS AGE
    Namespace,
    /// NAME DATA AGE
    ConfigMap,
    /// NAME TYPE DATA AGE
    Secret,
    /// NAME SECRETS AGE
    ServiceAccount,
    /// LAST SEEN TYPE REASON OBJECT MESSAGE
    Event,
    /// NAME HOLDER AGE
    Lease,
}

/// Produces a type's OpenAPI schema (a `$ref` into the generator's definitions).
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether the type has a `/status` subresource (and so spec/status separation).
    pub has_status: bool,
    pub printer: Printer,
    pub schema: Option<SchemaFn>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// The resource as named in messages: `configmaps`, `leases.coordination.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// Storage prefix of every object of this type (all namespaces).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)] // a table row, read column by column
fn rt(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
    printer: Printer,
    schema: SchemaFn,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories: &[],
        has_status,
        printer,
        schema: Some(schema),
    }
}

/// The built-in types served today.
pub fn builtin() -> Vec<ResourceType> {
    use k8s_openapi::api::{coordination, core, events};
    use Printer as P;
    vec![
        rt(
            "",
            "v1",
            "Namespace",
            "namespaces",
            "namespace",
            false,
            &["ns"],
            true,
            P::Namespace,
            schema_of::<core::v1::Namespace>,
        ),
        rt(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            "configmap",
            true,
            &["cm"],
            false,
            P::ConfigMap,
            schema_of::<core::v1::ConfigMap>,
        ),
        rt(
            "",
            "v1",
            "Secret",
            "secrets",
            "secret",
            true,
            &[],
            false,
            P::Secret,
            schema_of::<core::v1::Secret>,
        ),
        rt(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
            &["sa"],
            false,
            P::ServiceAccount,
            schema_of::<core::v1::ServiceAccount>,
        ),
        rt(
            "",
            "v1",
            "Event",
            "events",
            "event",
            true,
            &["ev"],
            false,
            P::Event,
            schema_of::<core::v1::Event>,
        ),
        rt(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            "event",
            true,
            &["ev"],
            false,
            P::Event,
            schema_of::<events::v1::Event>,
        ),
        rt(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            true,
            &[],
            false,
            P::Lease,
            schema_of::<coordination::v1::Lease>,
        ),
    ]
}

/// Every served type, shared by handlers.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Arc<Vec<ResourceType>>,
}

impl Registry {
    pub fn new(types: Vec<ResourceType>) -> Self {
        Registry {
            types: Arc::new(types),
        }
    }
    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }
    /// Group/version pairs in serving order (core first, then groups alphabetically).
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut gvs: Vec<_> = self.types.iter().map(|t| (t.group, t.version)).collect();
        gvs.sort();
        gvs.dedup();
        gvs
    }
}
