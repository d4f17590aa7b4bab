//! The OpenAPI definitions of the built-in kinds: k8s-openapi's schemas as schemars writes them
//! for OpenAPI 3, embedded compressed and read on demand (the documents are built from them).
//!
//! The server carries this data rather than the code that writes it: schemars and
//! k8s-openapi's `JsonSchema` impls were ~2 MB of the shipped binary. `definitions.json.gz` is
//! written by this module's test (`CAPSTAN_WRITE_DEFINITIONS=1`), which fails whenever the
//! embedded file is no longer what k8s-openapi generates (a version bump, a new built-in).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex, Weak};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

static EMBEDDED: &[u8] = include_bytes!("definitions.json.gz");

/// Where a definition's `$ref` points.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// Every embedded definition, each still in its JSON text until asked for.
pub struct Definitions {
    raw: HashMap<String, Box<RawValue>>,
}

impl Definitions {
    /// One parsed copy, shared while anyone holds it: documents built together (all of
    /// `/openapi/v2`) decompress the file once, and nothing stays once they are built.
    pub fn shared() -> Arc<Definitions> {
        static CURRENT: Mutex<Weak<Definitions>> = Mutex::new(Weak::new());
        let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = current.upgrade() {
            return d;
        }
        let d = Arc::new(Definitions::load());
        *current = Arc::downgrade(&d);
        d
    }

    fn load() -> Definitions {
        let parsed = decompress(EMBEDDED).and_then(|text| {
            serde_json::from_str::<HashMap<String, Box<RawValue>>>(&text).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(raw) => Definitions { raw },
            Err(e) => {
                // Only a broken build gets here (the file is checked by the unit test).
                tracing::error!(error = %e, "the embedded OpenAPI definitions cannot be read");
                Definitions {
                    raw: HashMap::new(),
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        serde_json::from_str(self.raw.get(name)?.get()).ok()
    }

    /// The names of every definition.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.raw.keys().map(String::as_str)
    }

    /// `roots` and every definition they refer to, transitively (what a schema generator
    /// asked for those kinds would have defined).
    pub fn closure(&self, roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        let mut todo: Vec<String> = roots.into_iter().collect();
        while let Some(name) = todo.pop() {
            if out.contains_key(&name) {
                continue;
            }
            let Some(v) = self.get(&name) else {
                continue;
            };
            refs(&v, &mut todo);
            out.insert(name, v);
        }
        out.into_iter().collect()
    }
}

fn decompress(gz: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// The definition names `v` refers to.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::registry::{schema_of, SchemaDef};
    use std::io::Write;

    /// Kinds clients send to subresources that no served type is made of (the protobuf decoder
    /// needs their field names: `UID` is not `u_id`), and the metadata custom kinds refer to.
    fn extra_kinds() -> [SchemaDef; 6] {
        use k8s_openapi::api;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        [
            schema_of::<api::authentication::v1::TokenRequest>(),
            schema_of::<api::policy::v1::Eviction>(),
            schema_of::<api::core::v1::Binding>(),
            schema_of::<api::autoscaling::v1::Scale>(),
            schema_of::<meta::DeleteOptions>(),
            schema_of::<meta::ObjectMeta>(),
        ]
    }

    /// What k8s-openapi's schemas are today, generated as the server once did per request.
    fn generated() -> BTreeMap<String, Value> {
        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        let kinds = crate::types::builtin::builtin()
            .into_iter()
            .filter_map(|rt| rt.schema)
            .chain(extra_kinds());
        for def in kinds {
            let schema = serde_json::to_value((def.generate)(&mut g)).unwrap_or_default();
            // The name the server derives from the type path is the one schemars gives it.
            assert_eq!(
                schema,
                serde_json::json!({"$ref": format!("{REF_PREFIX}{}", def.name())}),
                "{}",
                def.name()
            );
        }
        g.take_definitions(true)
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
            .collect()
    }

    #[test]
    fn embedded_definitions_are_what_k8s_openapi_generates() {
        let want = generated();
        if std::env::var_os("CAPSTAN_WRITE_DEFINITIONS").is_some() {
            // One definition per line: the file stays diffable once decompressed.
            let mut text = String::from("{\n");
            for (i, (k, v)) in want.iter().enumerate() {
                let sep = if i + 1 < want.len() { "," } else { "" };
                text.push_str(&format!("{}: {v}{sep}\n", Value::String(k.clone())));
            }
            text.push_str("}\n");
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/types/definitions.json.gz");
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            enc.write_all(text.as_bytes()).expect("compress");
            std::fs::write(path, enc.finish().expect("compress")).expect("write");
            return;
        }
        let defs = Definitions::load();
        let got: BTreeMap<String, Value> = defs
            .names()
            .map(|n| (n.to_string(), defs.get(n).unwrap_or_default()))
            .collect();
        assert_eq!(got.len(), want.len());
        for (name, v) in &want {
            assert_eq!(
                got.get(name),
                Some(v),
                "{name}: rewrite with CAPSTAN_WRITE_DEFINITIONS=1"
            );
        }
    }

    #[test]
    fn each_group_versions_closure_is_what_a_generator_for_its_kinds_defines() {
        let defs = Definitions::shared();
        let rows = crate::types::builtin::builtin();
        let mut gvs: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.group.clone(), r.version.clone()))
            .collect();
        gvs.dedup();
        assert!(gvs.len() > 20);
        for (group, version) in gvs {
            let kinds: Vec<SchemaDef> = rows
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .filter_map(|r| r.schema)
                .collect();
            let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
            kinds.iter().for_each(|d| {
                (d.generate)(&mut g);
            });
            let want: Map<String, Value> = g
                .take_definitions(true)
                .into_iter()
                .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
                .collect();
            let got = defs.closure(kinds.iter().map(SchemaDef::name));
            assert_eq!(got, want, "{group}/{version}");
        }
    }

    #[test]
    fn a_closure_holds_what_its_roots_refer_to_and_nothing_else() {
        let defs = Definitions::shared();
        let pod = defs.closure(["io.k8s.api.core.v1.Pod".to_string()]);
        assert!(pod.contains_key("io.k8s.api.core.v1.Container"));
        assert!(pod.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(pod.contains_key("io.k8s.apimachinery.pkg.api.resource.Quantity"));
        assert!(!pod.contains_key("io.k8s.api.apps.v1.Deployment"));
        let mut named = Vec::new();
        for v in pod.values() {
            refs(v, &mut named);
        }
        assert!(named.iter().all(|n| pod.contains_key(n)), "closed");
        // Held copies are shared; none stays once nobody holds it.
        assert!(Arc::ptr_eq(&defs, &Definitions::shared()));
    }
}
