//! CustomResourceDefinitions: validating a CRD as upstream does, and turning an established
//! one into registry entries (one per served version) with its schema, subresources, columns.

use std::sync::Arc;

use capstan_schema::{check_rules, check_structural, CelRules, FieldPath, Schema, Violation};
use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::jsonpath::JsonPath;
use crate::types::registry::ResourceType;
use crate::types::validation::{is_dns1123_label, is_dns1123_subdomain};

pub const GROUP: &str = "apiextensions.k8s.io";
/// Held on every CRD until its custom resources are gone (upstream's name).
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// `scale` subresource paths, as JSON pointers into the object.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    /// Where a string selector is (CRDs' labelSelectorPath).
    pub label_selector: Option<String>,
    /// Built-in workloads: the selector is `spec.selector`, printed as a string.
    pub selector_from_spec: bool,
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
    /// The version's `openAPIV3Schema` as compact JSON text (the one kept copy, parsed only
    /// to publish OpenAPI; versions with the same schema share it).
    pub schema_json: Option<Arc<str>>,
    pub schema: Option<Arc<Schema>>,
    /// The version's `x-kubernetes-validations`, compiled (None when it has none).
    pub cel: Option<Arc<capstan_schema::CelRules>>,
    pub columns: Vec<PrinterColumn>,
    /// Sent as a `Warning` header on every request to this version.
    pub deprecation_warning: Option<String>,
    /// Set while the CRD is being deleted: no new objects.
    pub terminating: bool,
    /// `spec_hash` of the CRD this came from: an unchanged CRD is not parsed again.
    pub spec_hash: u64,
}

impl CustomVersion {
    /// The version's `openAPIV3Schema` as a value (schemas as deep as admission allows:
    /// serde's fixed recursion limit does not apply).
    pub fn schema_value(&self) -> Option<Value> {
        use serde::Deserialize;
        let text = self.schema_json.as_deref()?;
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        Value::deserialize(&mut de).ok()
    }

    pub fn storage_api_version(&self, group: &str) -> String {
        format!("{group}/{}", self.storage_version)
    }
}

fn violation_cause(v: Violation) -> Cause {
    Cause {
        reason: v.reason(),
        message: v.message(),
        field: v.field,
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Upstream's defaulting for a CRD: listKind, singular, conversion strategy, and the
/// cleanup finalizer.
pub fn apply_defaults(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let kind = s(obj, "/spec/names/kind").to_string();
    if let Some(names) = obj["spec"].get_mut("names").and_then(Value::as_object_mut) {
        if !kind.is_empty() {
            names
                .entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
            names
                .entry("singular")
                .or_insert_with(|| json!(kind.to_lowercase()));
        }
    }
    let spec = &mut obj["spec"];
    if spec.get("conversion").is_none() {
        spec["conversion"] = json!({"strategy": "None"});
    }
    if spec.get("preserveUnknownFields").is_none() {
        spec["preserveUnknownFields"] = json!(false);
    }
}

/// Add the cleanup finalizer when deletion starts, as upstream does: the CRD waits for its
/// objects to go. (Added at create, a later server-side apply by the creator would remove
/// it as a field the applier no longer sets, and deletion would leave the objects behind.)
pub fn add_finalizer(obj: &mut Value) {
    let meta = &mut obj["metadata"];
    if !meta.get("finalizers").is_some_and(Value::is_array) {
        meta["finalizers"] = json!([]);
    }
    if let Some(list) = meta["finalizers"].as_array_mut() {
        if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
            list.push(json!(CLEANUP_FINALIZER));
        }
    }
}

fn dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// Every problem with a CRD, as upstream's ValidateCustomResourceDefinition reports them.
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut c = Vec::new();
    let group = s(obj, "/spec/group");
    let plural = s(obj, "/spec/names/plural");
    let singular = s(obj, "/spec/names/singular");
    let kind = s(obj, "/spec/names/kind");
    let list_kind = s(obj, "/spec/names/listKind");
    let name = s(obj, "/metadata/name");
    if !name.is_empty() && name != format!("{plural}.{group}") {
        c.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        c.push(Cause::required("spec.group", ""));
    } else if !is_dns1123_subdomain(group) {
        c.push(Cause::invalid("spec.group", group, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
    } else if !group.contains('.') {
        c.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        c.push(Cause::required("spec.names.plural", ""));
    } else if !dns1035_label(plural) {
        c.push(Cause::invalid("spec.names.plural", plural, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"));
    }
    if !singular.is_empty() && !dns1035_label(singular) {
        c.push(Cause::invalid("spec.names.singular", singular, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"));
    }
    let kind_ok = |k: &str| dns1035_label(&k.to_lowercase());
    if kind.is_empty() {
        c.push(Cause::required("spec.names.kind", ""));
    } else if !kind_ok(kind) {
        c.push(Cause::invalid(
            "spec.names.kind",
            kind,
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    if list_kind.is_empty() {
        c.push(Cause::required("spec.names.listKind", ""));
    } else if !kind_ok(list_kind) {
        c.push(Cause::invalid(
            "spec.names.listKind",
            list_kind,
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    } else if list_kind == kind {
        c.push(Cause::invalid(
            "spec.names.listKind",
            list_kind,
            "kind and listKind may not be the same",
        ));
    }
    for key in ["shortNames", "categories"] {
        if let Some(list) = obj
            .pointer(&format!("/spec/names/{key}"))
            .and_then(Value::as_array)
        {
            for (i, n) in list.iter().enumerate() {
                let n = n.as_str().unwrap_or("");
                if !is_dns1123_label(n) {
                    c.push(Cause::invalid(
                        format!("spec.names.{key}[{i}]"),
                        n,
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                    ));
                }
            }
        }
    }
    match s(obj, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => c.push(Cause::required("spec.scope", "")),
        other => c.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.scope".into(),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ),
        }),
    }
    match s(obj, "/spec/conversion/strategy") {
        "" | "None" => {}
        "Webhook" => c.push(Cause::forbidden(
            "spec.conversion.strategy",
            "Webhook conversion is not supported by this server; use None",
        )),
        other => c.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.conversion.strategy".into(),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"None\", \"Webhook\""
            ),
        }),
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        c.push(Cause::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = Vec::new();
    let mut storage = 0;
    for (i, v) in versions.iter().enumerate() {
        let p = format!("spec.versions[{i}]");
        let vname = s(v, "/name");
        if vname.is_empty() {
            c.push(Cause::required(format!("{p}.name"), ""));
        } else if !dns1035_label(vname) {
            c.push(Cause::invalid(format!("{p}.name"), vname, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"));
        } else if seen.contains(&vname) {
            c.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{p}.name"),
                message: format!("Duplicate value: {vname:?}"),
            });
        }
        seen.push(vname);
        if v.get("storage") == Some(&json!(true)) {
            storage += 1;
        }
        for f in ["served", "storage"] {
            if !v.get(f).is_some_and(Value::is_boolean) {
                c.push(Cause::required(format!("{p}.{f}"), ""));
            }
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => c.push(Cause::required(
                format!("{p}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(raw) => {
                let sp = FieldPath::root(&format!("{p}.schema.openAPIV3Schema"));
                match Schema::parse(raw, &sp) {
                    Ok(schema) => {
                        c.extend(
                            check_structural(&schema, &sp)
                                .into_iter()
                                .map(violation_cause),
                        );
                        c.extend(check_rules(raw, &sp).into_iter().map(violation_cause));
                    }
                    Err(capstan_schema::SchemaError::Invalid { path, message }) => {
                        c.push(Cause::invalid(path, "", &message))
                    }
                }
            }
        }
        if let Some(sub) = v.pointer("/subresources/scale") {
            let sp = format!("{p}.subresources.scale");
            for (f, prefix, required) in [
                ("specReplicasPath", ".spec.", true),
                ("statusReplicasPath", ".status.", true),
                ("labelSelectorPath", "", false),
            ] {
                let path = s(sub, &format!("/{f}"));
                if path.is_empty() {
                    if required {
                        c.push(Cause::required(format!("{sp}.{f}"), ""));
                    }
                    continue;
                }
                let simple = JsonPath::parse(path).ok().and_then(|j| j.as_pointer());
                let scoped = if prefix.is_empty() {
                    path.starts_with(".spec.") || path.starts_with(".status.")
                } else {
                    path.starts_with(prefix)
                };
                if simple.is_none() || !scoped {
                    let want = if prefix.is_empty() {
                        ".spec or .status"
                    } else {
                        prefix.trim_end_matches('.')
                    };
                    c.push(Cause::invalid(
                        format!("{sp}.{f}"),
                        path,
                        &format!("should be a json path under {want}"),
                    ));
                }
            }
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, col) in cols.iter().enumerate() {
                let cp = format!("{p}.additionalPrinterColumns[{j}]");
                if s(col, "/name").is_empty() {
                    c.push(Cause::required(format!("{cp}.name"), ""));
                }
                let ty = s(col, "/type");
                if !["integer", "number", "string", "boolean", "date"].contains(&ty) {
                    c.push(Cause {
                        reason: "FieldValueNotSupported",
                        field: format!("{cp}.type"),
                        message: format!("Unsupported value: {ty:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""),
                    });
                }
                let jp = s(col, "/jsonPath");
                if jp.is_empty() {
                    c.push(Cause::required(format!("{cp}.jsonPath"), ""));
                } else if let Err(e) = JsonPath::parse(jp) {
                    c.push(Cause::invalid(format!("{cp}.jsonPath"), jp, &e));
                }
            }
        }
    }
    if !versions.is_empty() && storage != 1 {
        c.push(Cause::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    if let Some(old) = old {
        if s(old, "/spec/scope") != s(obj, "/spec/scope") && !s(old, "/spec/scope").is_empty() {
            c.push(Cause::invalid(
                "spec.scope",
                s(obj, "/spec/scope"),
                "field is immutable",
            ));
        }
        if let Some(stored) = old
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
        {
            for sv in stored.iter().filter_map(Value::as_str) {
                if !seen.contains(&sv) {
                    c.push(Cause::invalid(
                        "status.storedVersions",
                        sv,
                        "must appear in spec.versions",
                    ));
                }
            }
        }
    }
    c
}

/// The registry entries an established CRD serves: one per served version.
/// What `resource_types` reads of a CRD, hashed: equal hashes give equal entries.
pub fn spec_hash(crd: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s(crd, "/metadata/name").hash(&mut h);
    crd.pointer("/metadata/deletionTimestamp")
        .is_some()
        .hash(&mut h);
    crd.get("spec").map(Value::to_string).hash(&mut h);
    h.finish()
}

pub fn resource_types(crd: &Value) -> Vec<ResourceType> {
    let spec_hash = spec_hash(crd);
    // Versions with the same schema share its text and its parsed form.
    let mut parsed: Vec<(Arc<str>, Option<Arc<Schema>>)> = Vec::new();
    let group = s(crd, "/spec/group").to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let list = |k: &str| -> Vec<String> {
        names
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage") == Some(&json!(true)))
        .map(|v| s(v, "/name").to_string())
        .unwrap_or_default();
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    versions
        .iter()
        .filter(|v| v.get("served") == Some(&json!(true)))
        .map(|v| {
            let version = s(v, "/name").to_string();
            let raw = v.pointer("/schema/openAPIV3Schema");
            let (schema_json, schema) = match raw {
                None => (None, None),
                Some(raw) => {
                    let text = raw.to_string();
                    match parsed.iter().find(|(t, _)| **t == *text) {
                        Some((t, schema)) => (Some(t.clone()), schema.clone()),
                        None => {
                            let schema =
                                Schema::parse(raw, &FieldPath::default()).ok().map(Arc::new);
                            let text: Arc<str> = Arc::from(text);
                            parsed.push((text.clone(), schema.clone()));
                            (Some(text), schema)
                        }
                    }
                }
            };
            let cel = raw
                .and_then(|raw| CelRules::compile(raw, &group, &version, s(&names, "/kind")))
                .map(Arc::new);
            let scale = v.pointer("/subresources/scale").map(|sc| {
                let ptr = |f: &str| JsonPath::parse(s(sc, f)).ok().and_then(|j| j.as_pointer());
                ScalePaths {
                    spec_replicas: ptr("/specReplicasPath").unwrap_or_default(),
                    status_replicas: ptr("/statusReplicasPath").unwrap_or_default(),
                    label_selector: ptr("/labelSelectorPath"),
                    selector_from_spec: false,
                }
            });
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: s(c, "/name").to_string(),
                            type_: s(c, "/type").to_string(),
                            format: s(c, "/format").to_string(),
                            description: s(c, "/description").to_string(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: s(c, "/jsonPath").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let deprecation_warning = (v.get("deprecated") == Some(&json!(true))).then(|| {
                v.get("deprecationWarning")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| {
                        format!("{group}/{version} {} is deprecated", s(&names, "/kind"))
                    })
            });
            let custom = Arc::new(CustomVersion {
                crd_name: s(crd, "/metadata/name").to_string(),
                storage_version: storage_version.clone(),
                schema_json,
                schema,
                cel,
                columns,
                deprecation_warning,
                terminating,
                spec_hash,
            });
            ResourceType {
                group: group.clone(),
                version: version.clone(),
                kind: s(&names, "/kind").to_string(),
                plural: s(&names, "/plural").to_string(),
                singular: s(&names, "/singular").to_string(),
                namespaced: s(crd, "/spec/scope") == "Namespaced",
                short_names: list("shortNames"),
                categories: list("categories"),
                has_status: v.pointer("/subresources/status").is_some(),
                schema: None,
                scale,
                subresources: Vec::new(),
                strategy: Arc::new(crate::types::custom::CustomResource {
                    version: custom.clone(),
                }),
                custom: Some(custom),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                {"name": "v1beta1", "served": true, "storage": false, "deprecated": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]}})
    }

    #[test]
    fn a_good_crd_is_accepted_and_served_per_version() {
        let mut c = crd();
        apply_defaults(&mut c);
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(validate(&c, None), vec![]);
        let types = resource_types(&c);
        assert_eq!(types.len(), 2);
        let v1 = &types[0];
        assert_eq!(
            (v1.version.as_str(), v1.has_status, v1.has_scale()),
            ("v1", true, true)
        );
        let cv = v1.custom.as_ref().unwrap();
        assert_eq!(v1.scale.as_ref().unwrap().spec_replicas, "/spec/replicas");
        assert_eq!(cv.storage_version, "v1");
        assert_eq!(
            types[1]
                .custom
                .as_ref()
                .unwrap()
                .deprecation_warning
                .as_deref(),
            Some("example.com/v1beta1 Widget is deprecated")
        );
    }

    #[test]
    fn bad_crds_name_every_field() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong");
        c["spec"]["group"] = json!("nodot");
        c["spec"]["scope"] = json!("Everywhere");
        c["spec"]["versions"][1]["storage"] = json!(true);
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["x"] = json!({"description": "untyped"});
        c["spec"]["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("float");
        apply_defaults(&mut c);
        let fields: Vec<String> = validate(&c, None).into_iter().map(|c| c.field).collect();
        for f in [
            "metadata.name",
            "spec.group",
            "spec.scope",
            "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[x].type",
            "spec.versions[0].additionalPrinterColumns[0].type",
        ] {
            assert!(fields.iter().any(|x| x == f), "missing {f} in {fields:?}");
        }
    }
}
