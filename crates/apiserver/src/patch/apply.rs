//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): merge a manager's
//! applied configuration by the type's list/map semantics, refuse (or, forced, take over)
//! values other managers own, and drop fields the manager applied before and omits now.

use serde_json::Value;

use crate::patch::managed_fields::{
    self, list_kind, read_entries, remove_at, value_at, write_entries, Entry, FieldSet, ListKind,
    Path,
};
use crate::patch::strategic_merge::Cursor;
use crate::status::ApiError;

/// Merge `config` into `live`: objects field by field (atomic maps replaced), map lists by
/// their keys, set lists as unions, atomic lists replaced.
fn merge(live: &mut Value, config: &Value, schema: Option<Cursor>) {
    let (Some(l), Some(c)) = (live.as_object_mut(), config.as_object()) else {
        *live = config.clone();
        return;
    };
    for (k, v) in c {
        let prop = schema.and_then(|s| s.property(k));
        let atomic_map = prop
            .and_then(|(_, raw)| raw.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic");
        match (l.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) if !atomic_map => {
                merge(existing, v, prop.map(|(c, _)| c));
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                let kind = prop
                    .map(|(_, raw)| list_kind(raw))
                    .unwrap_or(ListKind::Atomic);
                let item_schema = prop.and_then(|(c, _)| c.items());
                match kind {
                    ListKind::Atomic => *existing = items.clone(),
                    ListKind::Set => {
                        for i in items {
                            if !existing.contains(i) {
                                existing.push(i.clone());
                            }
                        }
                    }
                    ListKind::Map(keys) => {
                        for item in items {
                            let key = managed_fields::item_key(item, &keys);
                            match existing
                                .iter_mut()
                                .find(|e| managed_fields::item_key(e, &keys) == key)
                            {
                                Some(e) => merge(e, item, item_schema),
                                None => existing.push(item.clone()),
                            }
                        }
                    }
                }
            }
            _ => {
                l.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `.spec.template.spec.containers[name="nginx"].image`, as upstream prints a field.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: serde_json::Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the apply configuration is not UTF-8"))?;
    // kubectl and kube-rs send JSON (a subset of YAML): take the fast path for it.
    // (Flow-style YAML also starts with `{`: it falls through to the YAML parser.)
    let as_json = match text.trim_start().starts_with('{') {
        true => crate::limits::parse_request_json::<Value>(body, "the apply configuration")?.ok(),
        false => None,
    };
    let v: Value = match as_json {
        Some(v) => v,
        None => crate::limits::parse_request_yaml(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    crate::limits::check_value_depth(&v, "the apply configuration")?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    Ok(v)
}

/// What a write through `subresource` can set: upstream's strategies reset the rest
/// (ResetFieldsFor), and structured-merge-diff records no ownership of reset fields. The
/// main endpoint of a kind with a status subresource drops `status`; `/status` keeps only
/// status (and metadata), so its manager does not claim the spec it sent along.
pub fn owned_through(
    mut fields: FieldSet,
    rt: &crate::types::registry::ResourceType,
    subresource: &str,
) -> FieldSet {
    let top = |p: &Path| p.first().map(String::as_str).unwrap_or("").to_string();
    match subresource {
        "" if rt.has_status => fields.retain(|p| top(p) != "f:status"),
        "status" => fields.retain(|p| matches!(top(p).as_str(), "f:status" | "f:metadata")),
        _ => {}
    }
    fields
}

/// A conflict: the other manager, its API version, the field.
pub type Conflict = (String, String, Path);

/// The pure core of apply: `live` (with its managedFields) after `entry.manager` applies
/// `config` (whose fields are `applied`), or the conflicts that stop it.
pub fn apply_config(
    live: &Value,
    config: &Value,
    applied: &FieldSet,
    entry: &Entry,
    force: bool,
    schema: Option<Cursor>,
) -> Result<Value, Vec<Conflict>> {
    let manager = &entry.manager;
    let subresource = &entry.subresource;
    let mine = |e: &Entry| {
        &e.manager == manager && e.operation == "Apply" && &e.subresource == subresource
    };
    let mut entries = read_entries(live);
    let previous: FieldSet = entries
        .iter()
        .filter(|e| mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Values this apply changes in fields someone else owns.
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for p in e.fields.intersection(applied) {
            if p.last().map(String::as_str) == Some(".") {
                continue;
            }
            if value_at(live, p) != value_at(config, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (m, _, p) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == m) {
            e.fields.remove(p);
        }
    }
    let mut result = live.clone();
    merge(&mut result, config, schema);
    // Fields this manager applied before and leaves out now go, unless others own them.
    let mut dropped: Vec<&Path> = previous.difference(applied).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        let shared = entries.iter().any(|e| !mine(e) && e.fields.contains(p));
        if !shared {
            remove_at(&mut result, p);
        }
    }
    entries.retain(|e| !mine(e));
    entries.push(entry.clone());
    write_entries(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_print_as_upstream() {
        let p: Path = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"nginx\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(display(&p), ".spec.containers[name=\"nginx\"].image");
        assert_eq!(display(&vec!["f:data".into(), "f:a".into()]), ".data.a");
    }

    #[test]
    fn merge_follows_list_semantics() {
        let defs = json!({"S": {"properties": {
            "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}},
            "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "a": {"type": "array", "items": {"type": "string"}}}}});
        let defs = defs.as_object().unwrap().clone();
        let root = json!({"$ref": "#/components/schemas/S"});
        let c = Cursor::new(&root, &defs);
        let mut live = json!({"m": [{"name": "x", "v": 1, "w": 2}], "s": ["a"], "a": ["1", "2"], "keep": true});
        merge(
            &mut live,
            &json!({"m": [{"name": "x", "v": 9}, {"name": "y"}], "s": ["b"], "a": ["3"]}),
            Some(c),
        );
        assert_eq!(
            live,
            json!({"m": [{"name": "x", "v": 9, "w": 2}, {"name": "y"}], "s": ["a", "b"], "a": ["3"], "keep": true})
        );
    }
}

#[cfg(test)]
mod ownership_properties {
    //! Random sequences of applies by two managers on a schema with atomic, set and map
    //! lists: every field is owned by someone, and no manager loses a field it still applies.
    use super::*;
    use crate::patch::managed_fields::fields_of;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema() -> (Value, serde_json::Map<String, Value>) {
        let defs = json!({"S": {"properties": {
            "a": {"type": "integer"},
            "b": {"type": "integer"},
            "atomic": {"type": "array", "items": {"type": "string"}},
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "map": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}
        }}});
        (
            json!({"$ref": "#/components/schemas/S"}),
            defs.as_object().unwrap().clone(),
        )
    }

    fn config() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(0..3i64),
            proptest::option::of(0..3i64),
            proptest::option::of(proptest::collection::vec("[xyz]", 0..3)),
            proptest::option::of(proptest::collection::btree_set("[xyz]", 0..3)),
            proptest::option::of(proptest::collection::btree_map("[pq]", 0..3i64, 0..3)),
        )
            .prop_map(|(a, b, atomic, set, map)| {
                let mut c = json!({"metadata": {"name": "o"}});
                if let Some(a) = a {
                    c["a"] = json!(a);
                }
                if let Some(b) = b {
                    c["b"] = json!(b);
                }
                if let Some(x) = atomic {
                    c["atomic"] = json!(x);
                }
                if let Some(s) = set {
                    c["set"] = json!(s.into_iter().collect::<Vec<_>>());
                }
                if let Some(m) = map {
                    c["map"] = json!(m
                        .into_iter()
                        .map(|(n, v)| json!({"name": n, "v": v}))
                        .collect::<Vec<_>>());
                }
                c
            })
    }

    fn owned(obj: &Value, manager: &str) -> FieldSet {
        read_entries(obj)
            .into_iter()
            .filter(|e| e.manager == manager)
            .flat_map(|e| e.fields)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn ownership_invariants_hold(steps in proptest::collection::vec((any::<bool>(), any::<bool>(), config()), 1..12)) {
            let (root, defs) = schema();
            let c = Cursor::new(&root, &defs);
            let mut obj = json!({"metadata": {"name": "o"}});
            let mut last: [Option<FieldSet>; 2] = [None, None];
            for (second, force, cfg) in steps {
                let (me, other) = if second { ("b", 0) } else { ("a", 1) };
                let applied = fields_of(&cfg, Some(c));
                let entry = Entry { manager: me.into(), operation: "Apply".into(), api_version: "v1".into(), time: String::new(), subresource: String::new(), fields: applied.clone() };
                match apply_config(&obj, &cfg, &applied, &entry, force, Some(c)) {
                    Ok(next) => {
                        // The applier owns exactly what it applied, and the values are its.
                        prop_assert_eq!(owned(&next, me), applied.clone());
                        for p in &applied {
                            prop_assert_eq!(value_at(&next, p), value_at(&cfg, p), "value of {:?}", p);
                        }
                        // The other manager keeps what it still applies, except what was forced away.
                        if let Some(prev) = &last[other] {
                            let kept = owned(&next, if second { "a" } else { "b" });
                            for p in prev {
                                let taken = force && value_at(&obj, p) != value_at(&cfg, p) && applied.contains(p);
                                prop_assert!(kept.contains(p) || taken, "{:?} lost {:?}", other, p);
                            }
                            last[other] = Some(kept);
                        }
                        last[if second { 1 } else { 0 }] = Some(applied);
                        obj = next;
                    }
                    Err(conflicts) => {
                        prop_assert!(!force);
                        prop_assert!(!conflicts.is_empty());
                    }
                }
                // Every field of the object is owned by at least one manager.
                let mut body = obj.clone();
                body.as_object_mut().unwrap().remove("metadata");
                let all: FieldSet = owned(&obj, "a").union(&owned(&obj, "b")).cloned().collect();
                for p in fields_of(&body, Some(c)) {
                    prop_assert!(all.contains(&p), "{:?} is owned by nobody in {}", p, obj);
                }
            }
        }
    }
}
