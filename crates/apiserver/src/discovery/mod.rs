//! Discovery: aggregated (apidiscovery.k8s.io v2 and v2beta1) and legacy documents for
//! `/api`, `/apis`, `/api/v1` and `/apis/{group}/{version}`, built from the registry.

/// The Kubernetes release whose API this server serves.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub mod openapi;
pub mod openapi_v2;
pub mod openapi_v2_proto;
pub mod table;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::types::registry::{Registry, ResourceType};

const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// The aggregated content type the client accepts, if any (first one it lists wins).
fn aggregated_type(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(V2);
            }
        }
    }
    None
}

/// Verbs of the subresources the node agent serves, as upstream lists them.
fn streaming_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "log" | "ephemeralcontainers" => vec!["get", "patch", "update"],
        "binding" | "eviction" | "token" => vec!["create"],
        "finalize" => vec!["update"],
        "approval" => vec!["get", "patch", "update"],
        _ => vec!["create", "get"],
    }
}

/// The kind a subresource takes and returns, where it is not the resource's own (a pod's
/// eviction is a policy/v1 Eviction).
fn sub_kind<'a>(rt: &'a ResourceType, sub: &str) -> (&'a str, &'a str, &'a str) {
    match sub {
        "eviction" => ("policy", "v1", "Eviction"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        _ => (&rt.group, &rt.version, &rt.kind),
    }
}

/// Subresources the kind's strategy serves that the type's row does not list (a
/// namespace's `finalize`).
fn own_only(rt: &ResourceType) -> impl Iterator<Item = &'static str> + '_ {
    rt.strategy
        .own_subresources()
        .iter()
        .copied()
        .filter(|s| !rt.subresources.iter().any(|x| x == s))
}

fn resource_entry(rt: &ResourceType) -> Value {
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs(),
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    let mut subs = Vec::new();
    if rt.has_status {
        subs.push(json!({
            "subresource": "status",
            "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
            "verbs": ["get", "patch", "update"],
        }));
    }
    if rt.has_scale() {
        subs.push(json!({
            "subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"],
        }));
    }
    for sub in own_only(rt) {
        subs.push(json!({
            "subresource": sub,
            "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
            "verbs": streaming_verbs(sub),
        }));
    }
    for sub in &rt.subresources {
        let (group, version, kind) = sub_kind(rt, sub);
        subs.push(json!({
            "subresource": sub,
            "responseKind": {"group": group, "version": version, "kind": kind},
            "verbs": streaming_verbs(sub),
        }));
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

fn group_item(registry: &Registry, group: &str, content_type: &str) -> Value {
    let versions: Vec<Value> = registry
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let resources: Vec<Value> = registry
                .all()
                .iter()
                .filter(|t| t.group == g && t.version == v)
                .map(|t| resource_entry(t))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let _ = content_type;
    json!({"metadata": {"name": group}, "versions": versions})
}

fn aggregated(registry: &Registry, core: bool, content_type: &'static str) -> Response {
    let mut groups: Vec<String> = registry
        .group_versions()
        .into_iter()
        .map(|(g, _)| g)
        .filter(|g| g.is_empty() == core)
        .collect();
    groups.dedup();
    let api_version = if content_type == V2 {
        "apidiscovery.k8s.io/v2"
    } else {
        "apidiscovery.k8s.io/v2beta1"
    };
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": groups.iter().map(|g| group_item(registry, g, content_type)).collect::<Vec<_>>(),
    });
    ([(CONTENT_TYPE, content_type)], body.to_string()).into_response()
}

pub fn api(registry: &Registry, accept: &str) -> Response {
    if let Some(ct) = aggregated_type(accept) {
        return aggregated(registry, true, ct);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

pub fn apis(registry: &Registry, accept: &str) -> Response {
    if let Some(ct) = aggregated_type(accept) {
        return aggregated(registry, false, ct);
    }
    let mut groups: Vec<String> = registry
        .group_versions()
        .into_iter()
        .map(|(g, _)| g)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let versions: Vec<Value> = registry
                .group_versions()
                .into_iter()
                .filter(|(gg, _)| gg == g)
                .map(|(_, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0].clone()})
        })
        .collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items})).into_response()
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(|t| {
            let mut main = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": t.verbs(),
            });
            if !t.short_names.is_empty() {
                main["shortNames"] = json!(t.short_names);
            }
            if let Some(c) = &t.custom {
                main["storageVersionHash"] =
                    json!(storage_version_hash(&t.group, &c.storage_version, &t.kind));
            }
            let mut out = vec![main];
            if !t.categories.is_empty() {
                out[0]["categories"] = json!(t.categories);
            }
            if t.has_status {
                out.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
            }
            for sub in own_only(t) {
                out.push(json!({"name": format!("{}/{sub}", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": streaming_verbs(sub)}));
            }
            for sub in &t.subresources {
                let mut entry = json!({"name": format!("{}/{sub}", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": streaming_verbs(sub)});
                let (group, version, kind) = sub_kind(t, sub);
                if kind != t.kind {
                    // kubectl drain finds the Eviction's group-version here.
                    entry["group"] = json!(group);
                    entry["version"] = json!(version);
                    entry["kind"] = json!(kind);
                }
                out.push(entry);
            }
            if t.has_scale() {
                out.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            }
            out
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Upstream's `discovery.StorageVersionHash`: base64 of the first 8 bytes of the sha256 of
/// "group/version/kind" of the storage version. Clients (the storage version migrator)
/// compare it across discovery reads to notice that the storage version changed.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{group}/{version}/{kind}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8])
}

/// `/apis/{group}`.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    let versions: Vec<Value> = registry
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": preferred}),
    )
}
