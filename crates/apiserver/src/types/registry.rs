//! The registry: one entry per served resource type (scope, names, verbs, its strategy),
//! looked up by group/version/plural. Built-in types are fixed entries; each served version
//! of a CRD adds an entry of the same shape at run time.

use std::sync::{Arc, RwLock};

use crate::types::crd::CustomVersion;
use crate::types::strategy::Strategy;

/// Names a built-in kind's OpenAPI definition (k8s-openapi's type path gives the name); in
/// unit tests it also carries the schemars generator the embedded definitions come from.
#[derive(Clone, Copy)]
pub struct SchemaDef {
    type_name: fn() -> &'static str,
    #[cfg(test)]
    pub(crate) generate: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl SchemaDef {
    /// The definition's name from the type's path, without k8s-openapi's version module and
    /// the per-type module: `k8s_openapi::v1_33::api::core::v1::pod::Pod` is
    /// `io.k8s.api.core.v1.Pod`, `…::kube_aggregator::…` is `io.k8s.kube-aggregator.…` (the
    /// unit test of the embedded definitions checks every kind's against schemars').
    pub fn name(&self) -> String {
        let path = (self.type_name)();
        let path = path.strip_prefix("k8s_openapi::").unwrap_or(path);
        let mut segs: Vec<&str> = path.split("::").collect();
        if segs.first().is_some_and(|s| s.starts_with("v1_")) {
            segs.remove(0);
        }
        if segs.len() >= 2 {
            segs.remove(segs.len() - 2);
        }
        let mut out = String::from("io.k8s");
        for seg in segs {
            out.push('.');
            out.push_str(&seg.replace('_', "-"));
        }
        out
    }
}

#[cfg(not(test))]
pub(crate) fn schema_of<T>() -> SchemaDef {
    SchemaDef {
        type_name: std::any::type_name::<T>,
    }
}

#[cfg(test)]
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> SchemaDef {
    SchemaDef {
        type_name: std::any::type_name::<T>,
        generate: |g| g.subschema_for::<T>(),
    }
}

#[derive(Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether the type has a `/status` subresource (and so spec/status separation).
    pub has_status: bool,
    pub schema: Option<SchemaDef>,
    /// The `scale` subresource, when the type has one.
    pub scale: Option<crate::types::crd::ScalePaths>,
    /// Further subresources served by the node agent (`log`, `exec`, …), for discovery.
    pub subresources: Vec<String>,
    /// Set for custom resources: the CRD's schema, subresources and columns for this version.
    pub custom: Option<Arc<CustomVersion>>,
    /// Everything the REST path asks of this kind (defaults, validation, printing …).
    pub strategy: Arc<dyn Strategy>,
}

impl std::fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceType({})", self.qualified())
    }
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
    /// Whether objects carry `metadata.generation` (types with status, and every custom one).
    pub fn tracks_generation(&self) -> bool {
        self.has_status || self.custom.is_some()
    }
    pub fn has_scale(&self) -> bool {
        self.scale.is_some()
    }
    /// The verbs served, as discovery lists them. Upstream's namespace storage has no
    /// deletecollection (deleting every namespace at once is not an operation it offers).
    pub fn verbs(&self) -> &'static [&'static str] {
        const ALL: &[&str] = &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        const NO_DELETECOLLECTION: &[&str] = &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        if self.strategy.not_stored() {
            &["create"]
        } else if self.group.is_empty() && self.plural == "namespaces" {
            NO_DELETECOLLECTION
        } else {
            ALL
        }
    }
}

#[allow(clippy::too_many_arguments)] // a table row, read column by column
pub(crate) fn rt(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    singular: &str,
    namespaced: bool,
    short_names: &[&str],
    has_status: bool,
    schema: SchemaDef,
    strategy: Arc<dyn Strategy>,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: singular.into(),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        has_status,
        schema: Some(schema),
        scale: None,
        subresources: Vec::new(),
        custom: None,
        strategy,
    }
}

/// Every served type, shared by handlers. Readers take a snapshot; CRD changes swap in a
/// new one, so a request sees one consistent set of types from start to end.
#[derive(Debug, Clone)]
pub struct Registry {
    builtin: Arc<Vec<Arc<ResourceType>>>,
    types: Arc<RwLock<Arc<Vec<Arc<ResourceType>>>>>,
    /// Bumped whenever the served custom types are replaced, for loops that follow them.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Registry {
    pub fn new(types: Vec<ResourceType>) -> Self {
        let builtin: Arc<Vec<_>> = Arc::new(types.into_iter().map(Arc::new).collect());
        Registry {
            types: Arc::new(RwLock::new(builtin.clone())),
            builtin,
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
    /// Wakes when the served types change (CRDs established, versions added or removed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    /// Whether a built-in type is served at `group`/`version` (not only a CRD).
    pub fn is_builtin_group_version(&self, group: &str, version: &str) -> bool {
        self.builtin
            .iter()
            .any(|t| t.group == group && t.version == version)
    }
    pub fn all(&self) -> Arc<Vec<Arc<ResourceType>>> {
        self.types.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }
    pub fn is_builtin(&self, group: &str, plural: &str) -> bool {
        self.builtin
            .iter()
            .any(|t| t.group == group && t.plural == plural)
    }
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.all()
            .iter()
            .any(|t| t.group == group && t.version == version)
    }
    /// Group/version pairs in serving order: core first, then groups alphabetically; within
    /// a group the preferred version first (GA > beta > alpha, higher numbers first).
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut gvs: Vec<_> = self
            .all()
            .iter()
            .map(|t| (t.group.clone(), t.version.clone()))
            .collect();
        gvs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| version_order(&a.1, &b.1)));
        gvs.dedup();
        gvs
    }
    /// Replace every custom entry by `custom` (all served versions of all established CRDs).
    pub fn set_custom(&self, custom: Vec<ResourceType>) {
        let mut all: Vec<Arc<ResourceType>> = self.builtin.iter().cloned().collect();
        all.extend(custom.into_iter().map(Arc::new));
        *self.types.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(all);
        self.changes.send_modify(|generation| *generation += 1);
    }
}

/// Kubernetes version priority (`v2` < `v1` < `v1beta2` < `v1beta1` < `v1alpha1` < `foo`
/// in this order, i.e. the preferred version sorts first), as upstream's discovery orders them.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, i64, i64, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let major: i64 = rest[..digits].parse().ok()?;
            let tail = &rest[digits..];
            if tail.is_empty() {
                return Some((0, major, 0));
            }
            for (tier, word) in [(1u8, "beta"), (2u8, "alpha")] {
                if let Some(n) = tail.strip_prefix(word) {
                    return n.parse::<i64>().ok().map(|minor| (tier, major, minor));
                }
            }
            None
        });
        match parsed {
            Some((tier, major, minor)) => (tier, -major, -minor, String::new()),
            None => (3, 0, 0, v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

/// Core `namespaces` (which has the `finalize` subresource of its own).
pub fn is_core_namespaces(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut v = vec![
            "v1alpha1", "foo", "v1", "v1beta1", "v2", "v1beta2", "v10", "bar",
        ];
        v.sort_by(|a, b| super::version_order(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }
}
