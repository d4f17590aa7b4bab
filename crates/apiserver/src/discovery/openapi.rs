//! OpenAPI v3: one document per group-version, made from k8s-openapi's schemas (the embedded
//! definitions) on first use, carrying `x-kubernetes-group-version-kind`, the `fieldValidation`
//! parameter and the patch content types kubectl looks for before it validates or applies.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::types::definitions::{Definitions, REF_PREFIX};
use crate::types::registry::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

pub struct OpenApi {
    /// "api/v1" or "apis/{group}/{version}" -> its document (built on first use)
    docs: BTreeMap<String, Arc<GroupVersionDoc>>,
    /// `/openapi/v2`, made from these documents on first request (dropped with them).
    v2: OnceLock<Arc<crate::discovery::openapi_v2::SpecV2>>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query_param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"),
    ]
}

fn op(
    rt: &ResourceType,
    action: &str,
    operation_id: String,
    schema_ref: &Value,
    body: Option<Value>,
    params: Vec<Value>,
) -> Value {
    let mut o = json!({
        "operationId": operation_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}, "401": {"description": "Unauthorized"}},
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn paths_for(rt: &ResourceType, schema_ref: &Value, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&rt.group, &rt.version));
    let (collection, item) = if rt.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural),
        )
    } else {
        (
            format!("{base}/{}", rt.plural),
            format!("{base}/{}/{{name}}", rt.plural),
        )
    };
    let id = format!(
        "{}{}{}",
        if rt.group.is_empty() { "Core" } else { "" },
        rt.version,
        rt.kind
    );
    let json_body =
        json!({"content": {"application/json": {"schema": schema_ref}}, "required": true});
    let patch_schema = json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."});
    let mut patch_types = json!({
        "application/apply-patch+yaml": {"schema": patch_schema},
        "application/json-patch+json": {"schema": patch_schema},
        "application/merge-patch+json": {"schema": patch_schema},
    });
    // Custom resources take no strategic merge patch; kubectl reads this to choose a
    // JSON merge patch for `apply` instead.
    if rt.custom.is_none() {
        patch_types["application/strategic-merge-patch+json"] = json!({"schema": patch_schema});
    }
    let patch_body = json!({"content": patch_types, "required": true});
    let path_params = |with_name: bool| {
        let mut p = Vec::new();
        if with_name {
            p.push(json!({"name": "name", "in": "path", "required": true, "description": format!("name of the {}", rt.kind), "schema": {"type": "string", "uniqueItems": true}}));
        }
        if rt.namespaced {
            p.push(json!({"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": {"type": "string", "uniqueItems": true}}));
        }
        p
    };
    if rt.strategy.not_stored() {
        // A review is only created: upstream documents the one POST.
        paths.insert(
            collection,
            json!({
                "post": op(rt, "post", format!("create{id}"), schema_ref, Some(json_body), write_params()),
                "parameters": path_params(false),
            }),
        );
        return;
    }
    let mut patch_params = write_params();
    patch_params.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    paths.insert(
        collection,
        json!({
            "get": op(rt, "list", format!("list{id}"), &json!({"type": "object"}), None, vec![]),
            "post": op(rt, "post", format!("create{id}"), schema_ref, Some(json_body.clone()), write_params()),
            "delete": op(rt, "deletecollection", format!("deleteCollection{id}"), &json!({"type": "object"}), None, vec![]),
            "parameters": path_params(false),
        }),
    );
    paths.insert(
        item,
        json!({
            "get": op(rt, "get", format!("read{id}"), schema_ref, None, vec![]),
            "put": op(rt, "put", format!("replace{id}"), schema_ref, Some(json_body), write_params()),
            "patch": op(rt, "patch", format!("patch{id}"), schema_ref, Some(patch_body), patch_params),
            "delete": op(rt, "delete", format!("delete{id}"), schema_ref, None, vec![]),
            "parameters": path_params(true),
        }),
    );
}

fn build_doc(types: &[&ResourceType]) -> Value {
    let mut paths = Map::new();
    let mut kinds: Vec<(String, Value, bool)> = Vec::new();
    let mut custom_schemas: Vec<(String, Value)> = Vec::new();
    // The definitions this document holds: its kinds' and what they refer to.
    let mut roots: Vec<String> = Vec::new();
    for rt in types {
        let schema_ref = match (rt.schema, &rt.custom) {
            (Some(def), _) => {
                let name = def.name();
                let r = json!({ "$ref": format!("{REF_PREFIX}{name}") });
                roots.push(name);
                r
            }
            (None, Some(custom)) => {
                let name = custom_schema_name(rt);
                custom_schemas.push((name.clone(), custom_schema(custom)));
                roots.push(OBJECT_META.to_string());
                json!({ "$ref": format!("{REF_PREFIX}{name}") })
            }
            (None, None) => continue,
        };
        if let Some(name) = schema_ref
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
        {
            kinds.push((name.to_string(), gvk(rt), rt.strategy.not_stored()));
        }
        paths_for(rt, &schema_ref, &mut paths);
    }
    let mut schemas = Definitions::shared().closure(roots);
    annotate_lists(&mut schemas);
    schemas.extend(custom_schemas);
    for (name, gvk, review) in kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
            if review {
                // A review is only POSTed, so kubectl validates it against this schema
                // client-side; upstream's does not require `metadata` (k8s-openapi's does).
                if let Some(Value::Array(req)) = s.get_mut("required") {
                    req.retain(|f| f != "metadata");
                }
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Put upstream's list and map markers on the built-in definitions' properties
/// (`x-kubernetes-patch-merge-key` and friends): kubectl reads them to compute strategic
/// merge patches, and the server merges by them.
fn annotate_lists(schemas: &mut Map<String, Value>) {
    let table = crate::encoding::k8s_fields::table();
    for (name, schema) in schemas.iter_mut() {
        let Some(fields) = table.for_definition(name) else {
            continue;
        };
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop, ps) in props.iter_mut() {
            let Some(f) = crate::encoding::k8s_fields::Table::field(fields, prop) else {
                continue;
            };
            let Some(ps) = ps.as_object_mut() else {
                continue;
            };
            if let Some(v) = f.patch_strategy {
                ps.insert("x-kubernetes-patch-strategy".into(), json!(v));
            }
            if let Some(v) = f.merge_key {
                ps.insert("x-kubernetes-patch-merge-key".into(), json!(v));
            }
            if let Some(v) = f.list_type {
                ps.insert("x-kubernetes-list-type".into(), json!(v));
            }
            if !f.list_map_keys.is_empty() {
                ps.insert("x-kubernetes-list-map-keys".into(), json!(f.list_map_keys));
            }
            if let Some(v) = f.map_type {
                ps.insert("x-kubernetes-map-type".into(), json!(v));
            }
        }
    }
}

/// Upstream's definition name for a custom kind: the group reversed, version, kind
/// (`stable.example.com/v1 CronTab` is `com.example.stable.v1.CronTab`).
fn custom_schema_name(rt: &ResourceType) -> String {
    let group: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), rt.version, rt.kind)
}

/// A custom kind's schema: the CRD's `openAPIV3Schema` with the standard `apiVersion`,
/// `kind` and `metadata` (a reference to ObjectMeta) put in, as upstream publishes it.
fn custom_schema(custom: &crate::types::crd::CustomVersion) -> Value {
    let meta_ref = json!({ "$ref": format!("{REF_PREFIX}{OBJECT_META}") });
    let mut schema = custom
        .schema_value()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = json!({});
    }
    let props = &mut schema["properties"];
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    props["metadata"] = json!({"allOf": [meta_ref], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
    schema
}

/// A hash of what a group-version's document is made of, known without building it:
/// it moves whenever the document would (for `/openapi/v3`'s `?hash=` and caches).
fn inputs_hash(types: &[Arc<ResourceType>]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR).hash(&mut h);
    for t in types {
        (&t.group, &t.version, &t.kind, &t.plural, t.namespaced).hash(&mut h);
        (t.has_status, t.scale.is_some()).hash(&mut h);
        t.custom.as_ref().map(|c| c.spec_hash).hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

/// One group-version's document, built on first use and kept while its types are served.
pub struct GroupVersionDoc {
    types: Vec<Arc<ResourceType>>,
    hash: String,
    built: OnceLock<Built>,
}

struct Built {
    doc: Value,
    /// kind -> the name of its schema in `doc`
    kinds: HashMap<String, String>,
}

impl GroupVersionDoc {
    fn new(types: Vec<Arc<ResourceType>>) -> Self {
        GroupVersionDoc {
            hash: inputs_hash(&types),
            types,
            built: OnceLock::new(),
        }
    }

    fn make(&self) -> Value {
        let types: Vec<&ResourceType> = self.types.iter().map(|t| t.as_ref()).collect();
        build_doc(&types)
    }

    fn built(&self) -> &Built {
        self.built.get_or_init(|| {
            let doc = self.make();
            // Index each served kind's schema once, for per-request field validation.
            let mut kinds = HashMap::new();
            for (name, schema) in doc
                .pointer("/components/schemas")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                for k in schema
                    .get("x-kubernetes-group-version-kind")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(kind) = k.get("kind").and_then(Value::as_str) {
                        kinds.insert(kind.to_string(), name.clone());
                    }
                }
            }
            Built { doc, kinds }
        })
    }

    /// The document: the kept one if it was built, else one made for this use only (so
    /// `/openapi/v2` does not make every custom group-version's document stay).
    fn doc_or_transient(&self) -> Cow<'_, Value> {
        match self.built.get() {
            Some(b) => Cow::Borrowed(&b.doc),
            None if self.types.iter().all(|t| t.custom.is_none()) => {
                Cow::Borrowed(&self.built().doc)
            }
            None => Cow::Owned(self.make()),
        }
    }
}

/// Built-in group-versions never change: their documents are shared by every `OpenApi`
/// (a CRD change rebuilds only what it touches), keyed by what they are made of.
fn builtin_doc(types: Vec<Arc<ResourceType>>) -> Arc<GroupVersionDoc> {
    static SHARED: OnceLock<Mutex<HashMap<String, Arc<GroupVersionDoc>>>> = OnceLock::new();
    let hash = inputs_hash(&types);
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    shared
        .entry(hash)
        .or_insert_with(|| Arc::new(GroupVersionDoc::new(types)))
        .clone()
}

impl OpenApi {
    /// The documents of what `registry` serves; none is built until it is used.
    pub fn build(registry: &Registry) -> Self {
        let all = registry.all();
        let docs = registry
            .group_versions()
            .into_iter()
            .map(|(g, v)| {
                let types: Vec<Arc<ResourceType>> = all
                    .iter()
                    .filter(|t| t.group == g && t.version == v)
                    .cloned()
                    .collect();
                let doc = if types.iter().all(|t| t.custom.is_none()) {
                    builtin_doc(types)
                } else {
                    Arc::new(GroupVersionDoc::new(types))
                };
                (gv_path(&g, &v), doc)
            })
            .collect();
        OpenApi {
            docs,
            v2: OnceLock::new(),
        }
    }

    /// A kind's schema and the definitions its references resolve against.
    pub fn schema_for(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<(&Value, &Map<String, Value>)> {
        let built = self.docs.get(&gv_path(group, version))?.built();
        let name = built.kinds.get(kind)?;
        let defs = built.doc.pointer("/components/schemas")?.as_object()?;
        Some((defs.get(name)?, defs))
    }

    /// `/openapi/v3`: where each group-version's document lives.
    pub fn root(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(path, gv)| {
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", gv.hash)}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// `/openapi/v3/{api/v1 | apis/g/v}`.
    pub fn doc(&self, path: &str) -> Option<&Value> {
        self.docs
            .get(path.trim_matches('/'))
            .map(|gv| &gv.built().doc)
    }

    /// The Swagger 2.0 document of every group-version (`/openapi/v2`).
    pub fn v2(&self) -> Arc<crate::discovery::openapi_v2::SpecV2> {
        self.v2
            .get_or_init(|| {
                // Held across every document built for it: the definitions are read once.
                let _definitions = Definitions::shared();
                Arc::new(crate::discovery::openapi_v2::SpecV2::build(
                    self.docs.values().map(|gv| gv.doc_or_transient()),
                ))
            })
            .clone()
    }

    /// The schema definitions of a group-version (for field validation).
    pub fn schemas(&self, group: &str, version: &str) -> Option<&Map<String, Value>> {
        self.doc(&gv_path(group, version))?
            .pointer("/components/schemas")?
            .as_object()
    }
}
