//! What the GC knows of the served resources (upstream's RESTMapper and deletable-resources
//! list): which to watch, and how to reach the owner an ownerReference names.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{DynamicObject, PartialObjectMeta};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::{Api, Client};

/// One served resource at the version the GC uses.
#[derive(Debug)]
pub struct Res {
    pub ar: ApiResource,
    pub namespaced: bool,
}

impl Res {
    /// `group/version/plural`, naming the resource's watch.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ar.api_version, self.ar.plural)
    }

    /// The metadata-only API of this resource in `namespace` (ignored if cluster-scoped).
    pub fn api(
        &self,
        client: &Client,
        namespace: Option<&str>,
    ) -> Api<PartialObjectMeta<DynamicObject>> {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &self.ar),
            _ => Api::all_with(client.clone(), &self.ar),
        }
    }
}

/// Upstream's default `--ignored-resources` of the GC: events are never owners worth a watch.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → the core group).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

#[derive(Default)]
pub struct Resources {
    /// (group, kind) → the resource at its group's preferred version (else another served one).
    by_kind: HashMap<(String, String), Arc<Res>>,
    /// What the GC watches: listable, watchable and deletable, at the preferred version.
    pub monitored: Vec<Arc<Res>>,
}

impl Resources {
    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let d = Discovery::new(client.clone()).run().await?;
        let mut r = Resources::default();
        for group in d.groups() {
            let preferred = group.preferred_version_or_latest().to_string();
            for (ar, caps) in group.recommended_resources() {
                if ar.plural.contains('/') {
                    continue;
                }
                let watchable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                    .iter()
                    .all(|v| caps.supports_operation(v));
                let ignored = IGNORED
                    .iter()
                    .any(|(g, p)| *g == ar.group && *p == ar.plural);
                let res = Arc::new(Res {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                });
                r.by_kind
                    .insert((res.ar.group.clone(), res.ar.kind.clone()), res.clone());
                if watchable && !ignored {
                    r.monitored.push(res);
                }
            }
            // Kinds only served at other versions can still be owners.
            for v in group.versions().filter(|v| *v != preferred) {
                for (ar, caps) in group.versioned_resources(v) {
                    if ar.plural.contains('/') {
                        continue;
                    }
                    r.by_kind
                        .entry((ar.group.clone(), ar.kind.clone()))
                        .or_insert_with(|| {
                            Arc::new(Res {
                                namespaced: caps.scope == Scope::Namespaced,
                                ar,
                            })
                        });
                }
            }
        }
        Ok(r)
    }

    /// The resource an ownerReference's `apiVersion` and `kind` name (any served version
    /// of its group).
    pub fn for_ref(&self, api_version: &str, kind: &str) -> Option<Arc<Res>> {
        self.by_kind
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
    }

    #[cfg(test)]
    pub fn insert(&mut self, res: Arc<Res>) {
        self.by_kind
            .insert((res.ar.group.clone(), res.ar.kind.clone()), res.clone());
        self.monitored.push(res);
    }
}
