//! Strategic merge patch: a merge patch that merges lists by their merge keys (containers by
//! name, ports by containerPort, …) as the type's OpenAPI markers say, with the directives
//! kubectl sends (`$patch`, `$retainKeys`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Where in the type's schema a value sits.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    node: &'a Value,
    defs: &'a Map<String, Value>,
}

impl<'a> Cursor<'a> {
    pub fn new(node: &'a Value, defs: &'a Map<String, Value>) -> Self {
        Cursor { node, defs }.resolved()
    }

    /// Follow `$ref` (also inside a one-element `allOf`) to the definition.
    fn resolved(self) -> Self {
        let mut node = self.node;
        for _ in 0..8 {
            let target = node
                .get("$ref")
                .or_else(|| node.pointer("/allOf/0/$ref"))
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .and_then(|name| self.defs.get(name));
            match target {
                Some(t) => node = t,
                None => break,
            }
        }
        Cursor {
            node,
            defs: self.defs,
        }
    }

    pub fn property(&self, key: &str) -> Option<(Cursor<'a>, &'a Value)> {
        let raw = self
            .node
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| {
                self.node
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
            })?;
        Some((
            Cursor {
                node: raw,
                defs: self.defs,
            }
            .resolved(),
            raw,
        ))
    }

    pub fn items(&self) -> Option<Cursor<'a>> {
        self.node.get("items").map(|i| {
            Cursor {
                node: i,
                defs: self.defs,
            }
            .resolved()
        })
    }
}

fn marker<'a>(raw: &'a Value, key: &str) -> Option<&'a str> {
    raw.get(key).and_then(Value::as_str)
}

/// Apply `patch` to `target`; without a schema every list is replaced, as for a merge patch.
pub fn merge(target: &mut Value, patch: &Value, schema: Option<Cursor>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = p.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    let Some(t) = target.as_object_mut() else {
        return;
    };
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field, v));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                let del: HashSet<String> = del.iter().map(identity).collect();
                list.retain(|x| !del.contains(&identity(x)));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let prop = schema.and_then(|s| s.property(k));
        match v {
            Value::Array(items) => {
                let strategy = prop.and_then(|(_, raw)| marker(raw, "x-kubernetes-patch-strategy"));
                let key = prop.and_then(|(_, raw)| marker(raw, "x-kubernetes-patch-merge-key"));
                let merging = strategy.is_some_and(|s| s.split(',').any(|x| x == "merge"));
                match (merging, t.get_mut(k)) {
                    (true, Some(Value::Array(existing))) => {
                        let item_schema = prop.and_then(|(c, _)| c.items());
                        merge_list(existing, items, key, item_schema);
                    }
                    (true, _) => {
                        // Merged into an empty list, so a `null` field in a new item
                        // means "absent" here too (pod conditions' reason, message).
                        let mut fresh = Vec::new();
                        merge_list(&mut fresh, items, key, prop.and_then(|(c, _)| c.items()));
                        t.insert(k.clone(), Value::Array(fresh));
                    }
                    _ => {
                        // Nothing to merge into: the patch's items, without directives.
                        let clean: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect();
                        t.insert(k.clone(), Value::Array(clean));
                    }
                }
            }
            Value::Object(_) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                merge(entry, v, prop.map(|(c, _)| c));
                if entry.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    for (field, order) in orders {
        let key = schema
            .and_then(|s| s.property(field))
            .and_then(|(_, raw)| marker(raw, "x-kubernetes-patch-merge-key"));
        if let (Some(Value::Array(list)), Some(order)) = (t.get_mut(field), order.as_array()) {
            reorder(list, order, key);
        }
    }
    if let Some(keep) = retain {
        t.retain(|k, _| keep.iter().any(|r| r == k));
    }
}

/// A hashable identity for a list item's key value (merge keys are scalars; anything else
/// still gets a faithful, if longer, identity). Lookups by it keep merges of long lists
/// linear: a patch of 300,000 items must not cost 300,000².
fn identity(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s{s}"),
        other => format!("j{other}"),
    }
}

fn merge_list(existing: &mut Vec<Value>, patch: &[Value], key: Option<&str>, item: Option<Cursor>) {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    let Some(key) = key else {
        // A merged list of scalars (finalizers …): a set union, in order.
        let mut seen: HashSet<String> = existing.iter().map(identity).collect();
        for v in patch {
            if seen.insert(identity(v)) {
                existing.push(v.clone());
            }
        }
        return;
    };
    // Positions of every item by key; deleted items become None until the end.
    let mut slots: Vec<Option<Value>> = existing.drain(..).map(Some).collect();
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in slots.iter().enumerate() {
        if let Some(id) = e.as_ref().and_then(|e| e.get(key)) {
            by_key.entry(identity(id)).or_default().push(i);
        }
    }
    for p in patch {
        let id = p.get(key).map(identity);
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(positions) = id.and_then(|id| by_key.remove(&id)) {
                for i in positions {
                    slots[i] = None;
                }
            }
            continue;
        }
        let pos = id
            .as_ref()
            .and_then(|id| by_key.get(id))
            .and_then(|positions| positions.first().copied());
        match pos.and_then(|i| slots[i].as_mut()) {
            Some(target) => merge(target, p, item),
            None => {
                let mut fresh = Value::Null;
                merge(&mut fresh, p, item);
                if let Some(id) = id {
                    by_key.entry(id).or_default().push(slots.len());
                }
                slots.push(Some(fresh));
            }
        }
    }
    existing.extend(slots.into_iter().flatten());
}

/// `$setElementOrder`: the listed items first, in the given order; the rest after.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Option<String> {
        match key {
            Some(k) => v.get(k).map(identity),
            None => Some(identity(v)),
        }
    };
    let mut ranks: HashMap<String, usize> = HashMap::new();
    for (i, o) in order.iter().enumerate() {
        if let Some(id) = ident(o) {
            ranks.entry(id).or_insert(i);
        }
    }
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| {
            let rank = ident(&v)
                .and_then(|id| ranks.get(&id).copied())
                .unwrap_or(usize::MAX);
            (rank, i, v)
        })
        .collect();
    indexed.sort_by_key(|(r, i, _)| (*r, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> (Value, Map<String, Value>) {
        let defs = json!({
            "Spec": {"properties": {
                "containers": {"type": "array", "items": {"$ref": "#/components/schemas/Container"}, "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name"},
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"},
                "args": {"type": "array", "items": {"type": "string"}},
                "strategy": {"allOf": [{"$ref": "#/components/schemas/Strategy"}]}
            }},
            "Container": {"properties": {"ports": {"type": "array", "items": {"type": "object"}, "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "containerPort"}}},
            "Strategy": {"properties": {"type": {"type": "string"}, "rollingUpdate": {"type": "object"}}}
        });
        (
            json!({"$ref": "#/components/schemas/Spec"}),
            defs.as_object().unwrap().clone(),
        )
    }

    #[test]
    fn a_merged_list_new_to_the_object_drops_null_fields_and_directives() {
        let (root, defs) = schema();
        let c = Cursor::new(&root, &defs);
        let mut doc = json!({});
        merge(
            &mut doc,
            &json!({"containers": [{"name": "a", "image": null}, {"name": "b", "$patch": "delete"}]}),
            Some(c),
        );
        assert_eq!(doc["containers"], json!([{"name": "a"}]));
    }

    #[test]
    fn lists_merge_by_key_as_kubectl_expects() {
        let (root, defs) = schema();
        let c = Cursor::new(&root, &defs);
        let mut doc = json!({
            "containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}, {"name": "b", "image": "y"}],
            "finalizers": ["f1"], "args": ["1", "2"], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}});
        merge(
            &mut doc,
            &json!({
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
            "containers": [{"name": "a", "image": "x:2"}, {"name": "c", "image": "z"}, {"name": "b", "$patch": "delete"}],
            "finalizers": ["f2"], "args": ["3"],
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
            Some(c),
        );
        assert_eq!(
            doc["containers"],
            json!([
            {"name": "a", "image": "x:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "c", "image": "z"}])
        );
        assert_eq!(doc["finalizers"], json!(["f1", "f2"]));
        assert_eq!(
            doc["args"],
            json!(["3"]),
            "lists without a strategy are replaced"
        );
        assert_eq!(
            doc["strategy"],
            json!({"type": "Recreate"}),
            "retainKeys clears the rest"
        );
        let mut doc = json!({"containers": [{"name": "a"}]});
        merge(
            &mut doc,
            &json!({"containers": [{"name": "n", "$patch": "replace"}, {"name": "n"}]}),
            Some(c),
        );
        assert_eq!(doc["containers"], json!([{"name": "n"}]));
        let mut doc = json!({"finalizers": ["a", "b"]});
        merge(
            &mut doc,
            &json!({"$deleteFromPrimitiveList/finalizers": ["a"]}),
            Some(c),
        );
        assert_eq!(doc["finalizers"], json!(["b"]));
    }
}
