//! Field ownership (`metadata.managedFields`): the set of fields each manager set, in
//! upstream's FieldsV1 form (`f:` fields, `k:` list items by key, `v:` set values, `.`),
//! computed from objects with the type's list semantics and kept on every write.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use crate::patch::strategic_merge::Cursor;

/// One owned field: the path of FieldsV1 keys from the root (`["f:spec", "f:replicas"]`).
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// How a list's items are identified.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// The list semantics of a property: x-kubernetes-list-type (with map keys), else a
/// built-in's patch merge key (map) or merge strategy (set), else atomic.
pub fn list_kind(raw: &Value) -> ListKind {
    let s = |k: &str| raw.get(k).and_then(Value::as_str);
    match s("x-kubernetes-list-type") {
        Some("set") => return ListKind::Set,
        Some("atomic") => return ListKind::Atomic,
        Some("map") => {
            let keys: Vec<String> = raw
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if !keys.is_empty() {
                return ListKind::Map(keys);
            }
        }
        _ => {}
    }
    match (
        s("x-kubernetes-patch-merge-key"),
        s("x-kubernetes-patch-strategy"),
    ) {
        (Some(k), _) => ListKind::Map(vec![k.to_string()]),
        (None, Some(st)) if st.split(',').any(|x| x == "merge") => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

/// Whether a map property is atomic (`x-kubernetes-map-type: atomic`).
fn atomic_map(raw: Option<&Value>) -> bool {
    raw.and_then(|r| r.get("x-kubernetes-map-type"))
        .and_then(Value::as_str)
        == Some("atomic")
}

/// The `k:` key of a map-list item. A missing `protocol` key is its schema default, TCP,
/// as structured-merge-diff fills defaulted key fields (ports lists key on it).
pub fn item_key(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys
        .iter()
        .filter_map(|k| match item.get(k) {
            Some(v) => Some((k.clone(), v.clone())),
            None if k == "protocol" => Some((k.clone(), json!("TCP"))),
            None => None,
        })
        .collect();
    format!("k:{}", Value::Object(m))
}

/// Fields a manager never owns: identity and server-managed metadata.
fn ignored(path: &[String]) -> bool {
    matches!(
        path.first().map(String::as_str),
        Some("f:apiVersion" | "f:kind")
    ) || (path.first().map(String::as_str) == Some("f:metadata")
        && matches!(
            path.get(1).map(String::as_str),
            Some(
                "f:managedFields"
                    | "f:resourceVersion"
                    | "f:uid"
                    | "f:creationTimestamp"
                    | "f:generation"
                    | "f:selfLink"
                    | "f:deletionTimestamp"
                    | "f:deletionGracePeriodSeconds"
                    | "f:name"
                    | "f:namespace"
            )
        ))
}

/// Every leaf field set in `obj` (objects recurse, list items by the list's kind).
pub fn fields_of(obj: &Value, schema: Option<Cursor>) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, schema, &mut Vec::new(), &mut out);
    out.retain(|p| !ignored(p));
    out
}

fn walk(v: &Value, schema: Option<Cursor>, path: &mut Path, out: &mut FieldSet) {
    let Value::Object(m) = v else {
        out.insert(path.clone());
        return;
    };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        let prop = schema.and_then(|s| s.property(k));
        path.push(format!("f:{k}"));
        walk_field(child, prop, path, out);
        path.pop();
    }
}

/// The leaves of one field's value, `path` naming the field and `prop` its schema.
fn walk_field(child: &Value, prop: Option<(Cursor, &Value)>, path: &mut Path, out: &mut FieldSet) {
    match child {
        Value::Object(_) if atomic_map(prop.map(|(_, raw)| raw)) => {
            out.insert(path.clone());
        }
        Value::Object(_) => walk(child, prop.map(|(c, _)| c), path, out),
        Value::Array(items) => {
            let kind = prop
                .map(|(_, raw)| list_kind(raw))
                .unwrap_or(ListKind::Atomic);
            let item_schema = prop.and_then(|(c, _)| c.items());
            match kind {
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
                ListKind::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Map(keys) => {
                    for item in items {
                        path.push(item_key(item, &keys));
                        path.push(".".into());
                        out.insert(path.clone());
                        path.pop();
                        walk(item, item_schema, path, out);
                        path.pop();
                    }
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// `to_fields_v1(&fields_of(obj, schema))`, built directly: the same walk, each leaf put
/// in place in the FieldsV1 tree rather than listed as a path first (a create records every
/// field of the object, and the paths were most of its cost).
pub fn fields_v1_of(obj: &Value, schema: Option<Cursor>) -> Value {
    let mut root = Value::Object(Map::new());
    let Value::Object(m) = obj else { return root };
    for (k, child) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let prop = schema.and_then(|s| s.property(k));
        let key = format!("f:{k}");
        match child {
            // Metadata's own children are filtered by `ignored` (an empty one is a leaf).
            Value::Object(meta) if k == "metadata" && !meta.is_empty() => {
                let cursor = prop.map(|(c, _)| c);
                let mut node = Value::Object(Map::new());
                for (mk, mv) in meta {
                    let sub = format!("f:{mk}");
                    if ignored(&["f:metadata".to_string(), sub.clone()]) {
                        continue;
                    }
                    if let Some(t) = tree_field(mv, cursor.and_then(|c| c.property(mk))) {
                        insert_child(&mut node, &sub, t);
                    }
                }
                if node.as_object().is_some_and(|m| !m.is_empty()) {
                    insert_child(&mut root, &key, node);
                }
            }
            _ => {
                if let Some(t) = tree_field(child, prop) {
                    insert_child(&mut root, &key, t);
                }
            }
        }
    }
    root
}

/// Put `child` under `key` in `node`, merged with a tree already there (list items with
/// the same key, as the path set holds them once).
fn insert_child(node: &mut Value, key: &str, child: Value) {
    let Value::Object(m) = node else { return };
    match m.get_mut(key) {
        Some(existing @ Value::Object(_)) => {
            if let Value::Object(c) = child {
                for (k, v) in c {
                    insert_child(existing, &k, v);
                }
            }
        }
        _ => {
            m.insert(key.to_string(), child);
        }
    }
}

/// `walk_field` as a FieldsV1 tree: `{}` for a leaf, None when the field has no leaves
/// (an empty set or map list).
fn tree_field(child: &Value, prop: Option<(Cursor, &Value)>) -> Option<Value> {
    let leaf = || Value::Object(Map::new());
    match child {
        Value::Object(_) if atomic_map(prop.map(|(_, raw)| raw)) => Some(leaf()),
        Value::Object(m) => tree_object(m, prop.map(|(c, _)| c)),
        Value::Array(items) => {
            let kind = prop
                .map(|(_, raw)| list_kind(raw))
                .unwrap_or(ListKind::Atomic);
            let item_schema = prop.and_then(|(c, _)| c.items());
            let mut node = leaf();
            match kind {
                ListKind::Atomic => return Some(leaf()),
                ListKind::Set => {
                    for item in items {
                        insert_child(&mut node, &format!("v:{item}"), leaf());
                    }
                }
                ListKind::Map(keys) => {
                    for item in items {
                        let mut sub = json!({".": {}});
                        if let Value::Object(im) = item {
                            if let Some(Value::Object(t)) = tree_object(im, item_schema) {
                                for (k, v) in t {
                                    insert_child(&mut sub, &k, v);
                                }
                            }
                        }
                        insert_child(&mut node, &item_key(item, &keys), sub);
                    }
                }
            }
            (!items.is_empty()).then_some(node)
        }
        _ => Some(leaf()),
    }
}

/// `walk` of an object as a FieldsV1 tree: an empty object is a leaf, one whose fields
/// have no leaves is nothing.
fn tree_object(m: &Map<String, Value>, schema: Option<Cursor>) -> Option<Value> {
    let mut node = Value::Object(Map::new());
    if m.is_empty() {
        return Some(node);
    }
    for (k, v) in m {
        if let Some(t) = tree_field(v, schema.and_then(|c| c.property(k))) {
            insert_child(&mut node, &format!("f:{k}"), t);
        }
    }
    node.as_object()
        .is_some_and(|n| !n.is_empty())
        .then_some(node)
}

/// A field set as FieldsV1 JSON.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let next = cur.entry(el.clone()).or_insert_with(|| json!({}));
            if !next.is_object() {
                *next = json!({});
            }
            let Value::Object(m) = next else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

/// FieldsV1 JSON back to a field set (its leaves, and `.` markers).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    rec(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Whether a list item has the key fields of a `k:` element (missing protocol = TCP).
fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| match item.get(k) {
        Some(x) => x == v,
        None => k == "protocol" && v == "TCP",
    })
}

/// The value at a field path, if present (one lookup; `changed` keeps a `Resolver` across
/// many).
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    Resolver::default().value_at(obj, path)
}

/// `value_at` for many paths into one object: each list is indexed by the key (or value)
/// its items are found by the first time it is searched, so comparing the fields of a list
/// of n items costs n lookups, not n² comparisons.
#[derive(Default)]
struct Resolver<'a> {
    lists: HashMap<(usize, String), HashMap<String, &'a Value>>,
}

impl<'a> Resolver<'a> {
    fn value_at(&mut self, obj: &'a Value, path: &[String]) -> Option<&'a Value> {
        let mut cur = obj;
        for el in path {
            if el == "." {
                continue;
            }
            if let Some(f) = el.strip_prefix("f:") {
                cur = cur.get(f)?;
            } else if let Some(k) = el.strip_prefix("k:") {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                let names: Vec<&str> = key.keys().map(String::as_str).collect();
                let want = projection(&names, |n| key.get(n));
                cur = self
                    .index(cur, names.join(","), |item| {
                        Some(projection(&names, |n| item.get(n)))
                    })?
                    .get(&want)
                    .copied()?;
            } else if let Some(val) = el.strip_prefix("v:") {
                let want: Value = serde_json::from_str(val).ok()?;
                cur = self
                    .index(cur, "\0v".into(), |item| Some(item.to_string()))?
                    .get(&want.to_string())
                    .copied()?;
            } else {
                return None;
            }
        }
        Some(cur)
    }

    fn index(
        &mut self,
        list: &'a Value,
        by: String,
        ident: impl Fn(&'a Value) -> Option<String>,
    ) -> Option<&HashMap<String, &'a Value>> {
        let items = list.as_array()?;
        let slot = (list as *const Value as usize, by);
        Some(self.lists.entry(slot).or_insert_with(|| {
            let mut map = HashMap::new();
            for item in items {
                if let Some(id) = ident(item) {
                    // The first match wins, as a linear search finds it.
                    map.entry(id).or_insert(item);
                }
            }
            map
        }))
    }
}

/// The identity of a list item by key fields (a missing protocol is TCP, as `item_matches`).
fn projection<'v>(names: &[&str], get: impl Fn(&str) -> Option<&'v Value>) -> String {
    let tcp = Value::String("TCP".into());
    let parts: Vec<String> = names
        .iter()
        .map(|n| match get(n) {
            Some(v) => v.to_string(),
            None if *n == "protocol" => tcp.to_string(),
            None => "\0absent".into(),
        })
        .collect();
    parts.join("\u{1}")
}

/// Remove the field at `path` from `obj` (a list item by key or value, a map field).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let (last, parent) = match path.split_last() {
        Some((l, p)) if l == "." => match p.split_last() {
            Some((l2, p2)) => (l2, p2),
            None => return,
        },
        Some(x) => x,
        None => return,
    };
    let Some(parent) = value_at_mut(obj, parent) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(list)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            parent.as_array_mut(),
        ) {
            list.retain(|item| !item_matches(item, &key));
        }
    } else if let Some(val) = last.strip_prefix("v:") {
        if let (Ok(want), Some(list)) = (serde_json::from_str::<Value>(val), parent.as_array_mut())
        {
            list.retain(|x| *x != want);
        }
    }
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|item| item_matches(item, &key))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

fn read_entry(e: &Value) -> Entry {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Entry {
        manager: s("manager"),
        operation: s("operation"),
        api_version: s("apiVersion"),
        time: s("time"),
        subresource: s("subresource"),
        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(read_entry).collect())
        .unwrap_or_default()
}

fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "manager": e.manager,
        "operation": e.operation,
        "apiVersion": e.api_version,
        "time": e.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&e.fields),
    });
    if !e.subresource.is_empty() {
        v["subresource"] = json!(e.subresource);
    }
    v
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(entry_json)
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Leaves whose value differs between `old` and `new` (added or changed), and leaves
/// `old` had that `new` lacks. Both are walked together and a field whose value is equal on
/// both sides is skipped whole (its leaves are the same, with the same values): a write
/// changes a few fields of an object, and listing every leaf of both sides made
/// managedFields bookkeeping one of the largest costs of a pod status update.
pub fn changed(old: &Value, new: &Value, schema: Option<Cursor>) -> (FieldSet, FieldSet) {
    let (mut set, mut gone) = (FieldSet::new(), FieldSet::new());
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            diff_objects(o, n, schema, &mut Vec::new(), &mut set, &mut gone)
        }
        _ => diff_leaves(
            old,
            new,
            |v, path, out| walk(v, schema, path, out),
            &mut Vec::new(),
            &mut set,
            &mut gone,
        ),
    }
    set.retain(|p| !ignored(p));
    gone.retain(|p| !ignored(p));
    (set, gone)
}

/// `changed` for two objects at `path`.
fn diff_objects(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    schema: Option<Cursor>,
    path: &mut Path,
    set: &mut FieldSet,
    gone: &mut FieldSet,
) {
    static ABSENT: Value = Value::Null;
    let keys = new
        .keys()
        .chain(old.keys().filter(|k| !new.contains_key(*k)));
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n {
            continue;
        }
        path.push(format!("f:{k}"));
        if !ignored(path) {
            let prop = schema.and_then(|s| s.property(k));
            match (o, n) {
                (Some(Value::Object(om)), Some(Value::Object(nm)))
                    if !om.is_empty()
                        && !nm.is_empty()
                        && !atomic_map(prop.map(|(_, raw)| raw)) =>
                {
                    diff_objects(om, nm, prop.map(|(c, _)| c), path, set, gone)
                }
                _ => {
                    let leaves = |v: &Value, path: &mut Path, out: &mut FieldSet| {
                        if !std::ptr::eq(v, &ABSENT) {
                            walk_field(v, prop, path, out)
                        }
                    };
                    diff_leaves(
                        o.unwrap_or(&ABSENT),
                        n.unwrap_or(&ABSENT),
                        leaves,
                        path,
                        set,
                        gone,
                    )
                }
            }
        }
        path.pop();
    }
}

/// The leaves under `path` of two differing values, compared one by one.
fn diff_leaves(
    old: &Value,
    new: &Value,
    leaves: impl Fn(&Value, &mut Path, &mut FieldSet),
    path: &mut Path,
    set: &mut FieldSet,
    gone: &mut FieldSet,
) {
    let (mut before, mut after) = (FieldSet::new(), FieldSet::new());
    leaves(old, path, &mut before);
    leaves(new, path, &mut after);
    let depth = path.len();
    let (mut in_old, mut in_new) = (Resolver::default(), Resolver::default());
    for p in &after {
        if !before.contains(p)
            || in_old.value_at(old, &p[depth..]) != in_new.value_at(new, &p[depth..])
        {
            set.insert(p.clone());
        }
    }
    gone.extend(before.difference(&after).cloned());
}

/// Record an Update by `manager` that turned `old` into `new` (old = None on create): the
/// fields it set become its own, taken from everyone else; fields it removed leave every set.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    schema: Option<Cursor>,
) {
    // A client that rewrites managedFields itself (kubectl's client-side-apply upgrade
    // does, with a JSON patch) gets what it wrote, as upstream honours it.
    let sent = new.pointer("/metadata/managedFields");
    if let (Some(sent), Some(old)) = (sent, old) {
        if Some(sent) != old.pointer("/metadata/managedFields") {
            return;
        }
    }
    let Some(old) = old else {
        // A create: the writer owns every field, written straight as FieldsV1.
        let fields = fields_v1_of(new, schema);
        if fields.as_object().is_some_and(|m| !m.is_empty()) {
            let mut entry = json!({
                "manager": manager,
                "operation": "Update",
                "apiVersion": api_version,
                "time": crate::object::now_rfc3339(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if !subresource.is_empty() {
                entry["subresource"] = json!(subresource);
            }
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("managedFields".into(), Value::Array(vec![entry]));
            }
        } else if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        return;
    };
    let (set, gone) = changed(old, new, schema);
    if !record_in_place(old, new, &set, &gone, manager, api_version, subresource) {
        record_by_sets(old, new, set, gone, manager, api_version, subresource);
    }
}

/// `record_update` over every entry read into a field set and written back (and the
/// oldest Update entries merged past the cap).
fn record_by_sets(
    old: &Value,
    new: &mut Value,
    set: FieldSet,
    gone: FieldSet,
    manager: &str,
    api_version: &str,
    subresource: &str,
) {
    let mut entries = read_entries(old);
    for e in entries.iter_mut() {
        e.fields.retain(|p| !set.contains(p) && !gone.contains(p));
    }
    if !set.is_empty() {
        let now = crate::object::now_rfc3339();
        match entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == "Update"
                && e.api_version == api_version
                && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(set);
                e.time = now;
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now,
                subresource: subresource.to_string(),
                fields: set,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut entries, MAX_UPDATE_MANAGERS);
    write_entries(new, &entries);
}

/// `record_update`'s common case, done on the entries' JSON: only the entries the change
/// touches (and the writer's own) are read into field sets and written back; the others
/// keep their JSON as it is. A status update by one writer used to convert every entry of
/// the object both ways. False (nothing done) when the change would push the number of
/// Update entries past the cap: the caller then takes the whole path.
fn record_in_place(
    old: &Value,
    new: &mut Value,
    set: &FieldSet,
    gone: &FieldSet,
    manager: &str,
    api_version: &str,
    subresource: &str,
) -> bool {
    let is_own = |e: &Value| {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        s("manager") == manager
            && s("operation") == "Update"
            && s("apiVersion") == api_version
            && s("subresource") == subresource
    };
    let stored: &[Value] = old
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let updaters = stored
        .iter()
        .filter(|e| e.get("operation").and_then(Value::as_str) != Some("Apply"))
        .count();
    let adds_entry = !set.is_empty() && !stored.iter().any(is_own);
    if updaters + adds_entry as usize > MAX_UPDATE_MANAGERS {
        return false;
    }
    // The object as written carries the stored entries (a patch keeps them; `record_update`
    // returned already if the client sent others), or none (an update that left them out).
    let mut list = match new
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"))
    {
        Some(Value::Array(list)) => list,
        _ => stored.to_vec(),
    };
    let mut own_found = false;
    for e in list.iter_mut() {
        let own = is_own(e);
        own_found |= own;
        let fields = e.get("fieldsV1");
        let nonempty = fields
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        let touched =
            !nonempty || fields.is_some_and(|f| set.iter().chain(gone).any(|p| has_leaf(f, p)));
        let grows = own && !set.is_empty();
        if !touched && !grows {
            continue;
        }
        let mut entry = read_entry(e);
        entry
            .fields
            .retain(|p| !set.contains(p) && !gone.contains(p));
        if grows {
            entry.fields.extend(set.iter().cloned());
            entry.time = crate::object::now_rfc3339();
        }
        *e = if entry.fields.is_empty() {
            Value::Null
        } else {
            entry_json(&entry)
        };
    }
    list.retain(|e| !e.is_null());
    if !own_found && !set.is_empty() {
        list.push(entry_json(&Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: crate::object::now_rfc3339(),
            subresource: subresource.to_string(),
            fields: set.clone(),
        }));
    }
    if let (Some(m), false) = (
        new.get_mut("metadata").and_then(Value::as_object_mut),
        list.is_empty(),
    ) {
        m.insert("managedFields".into(), Value::Array(list));
    }
    true
}

/// Whether `path` is one of the fields a FieldsV1 tree holds (a leaf: an empty object).
fn has_leaf(tree: &Value, path: &[String]) -> bool {
    let mut node = tree;
    for seg in path {
        match node.get(seg.as_str()) {
            Some(child) => node = child,
            None => return false,
        }
    }
    !path.is_empty() && node.as_object().is_none_or(|m| m.is_empty())
}

/// Upstream keeps at most this many Update entries; older ones merge into buckets.
pub const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Merge the oldest Update entries, per apiVersion, into an `ancient-changes` entry until
/// at most `max` Update entries remain (upstream's capManagersManager), so an object
/// written by many clients does not carry an ever-growing managedFields list.
pub fn cap_update_managers(entries: &mut Vec<Entry>, max: usize) {
    type Id = (String, String, String, String);
    let id = |e: &Entry| -> Id {
        (
            e.manager.clone(),
            e.operation.clone(),
            e.api_version.clone(),
            e.subresource.clone(),
        )
    };
    let mut updaters: Vec<Id> = entries
        .iter()
        .filter(|e| e.operation != "Apply")
        .map(id)
        .collect();
    if updaters.len() <= max {
        return;
    }
    // Oldest first by the second (RFC 3339 in UTC compares as text), then by identity.
    let time_of = |entries: &[Entry], who: &Id| -> String {
        entries
            .iter()
            .find(|e| id(e) == *who)
            .map(|e| e.time.chars().take(19).collect())
            .unwrap_or_default()
    };
    updaters.sort_by_cached_key(|who| (time_of(entries, who), who.clone()));
    let mut first_of_version: std::collections::HashMap<String, Id> = Default::default();
    let mut length = updaters.len();
    for who in updaters {
        if length <= max {
            break;
        }
        let Some(pos) = entries.iter().position(|e| id(e) == who) else {
            continue;
        };
        let version = entries[pos].api_version.clone();
        let Some(first) = first_of_version.get(&version).cloned() else {
            first_of_version.insert(version, who);
            continue;
        };
        let bucket: Id = (
            ANCIENT_CHANGES.into(),
            "Update".into(),
            version.clone(),
            String::new(),
        );
        if !entries.iter().any(|e| id(e) == bucket) {
            if let Some(f) = entries.iter_mut().find(|e| id(e) == first) {
                f.manager = ANCIENT_CHANGES.into();
                f.operation = "Update".into();
                f.subresource.clear();
            }
        }
        let merged = entries.remove(pos);
        if let Some(b) = entries.iter_mut().find(|e| id(e) == bucket) {
            b.fields.extend(merged.fields);
            // The merged entry's time: it is the more recent one.
            b.time = merged.time;
        }
        length -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> (Value, Map<String, Value>) {
        let defs = json!({
            "Obj": {"properties": {"spec": {"$ref": "#/components/schemas/Spec"}}},
            "Spec": {"properties": {
                "containers": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "args": {"type": "array", "items": {"type": "string"}},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic"}
            }}
        });
        (
            json!({"$ref": "#/components/schemas/Obj"}),
            defs.as_object().unwrap().clone(),
        )
    }

    #[test]
    fn fields_v1_built_directly_match_the_path_set() {
        let (root, d) = defs();
        let c = Cursor::new(&root, &d);
        let objects = [
            json!({"apiVersion": "v1", "kind": "Obj",
                "metadata": {"name": "x", "namespace": "n", "labels": {"a": "b", "c": ""},
                    "annotations": {}, "uid": "u", "generation": 1, "finalizers": ["z"]},
                "spec": {
                    "containers": [{"name": "web", "image": "i", "ports": [{"containerPort": 80}],
                        "env": []}, {"name": "side", "resources": {}}, {"name": "web", "tty": true}],
                    "finalizers": ["f", "g", "f"], "args": ["1"], "selector": {"k": "v"}, "empty": {}},
                "status": {"phase": "Pending", "conditions": [{"type": "Ready"}], "n": null}}),
            json!({"metadata": {"name": "only-ignored", "uid": "u"}, "spec": {"containers": [], "finalizers": []}}),
            json!({"metadata": {}, "spec": {"containers": ["not-an-object"], "finalizers": [1, {"a": 1}]}}),
            json!({"metadata": "scalar", "data": 5}),
            json!({}),
            json!("not an object"),
        ];
        for obj in &objects {
            for schema in [Some(c), None] {
                assert_eq!(
                    fields_v1_of(obj, schema),
                    to_fields_v1(&fields_of(obj, schema)),
                    "{obj}"
                );
            }
        }
    }

    #[test]
    fn field_sets_follow_list_semantics_and_round_trip() {
        let (root, d) = defs();
        let c = Cursor::new(&root, &d);
        let obj = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "b"}, "uid": "u"},
            "spec": {"containers": [{"name": "web", "image": "i"}], "finalizers": ["f"], "args": ["1"], "selector": {"k": "v"}}});
        let set = fields_of(&obj, Some(c));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}},
                "f:spec": {
                    "f:args": {},
                    "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}},
                    "f:finalizers": {"v:\"f\"": {}},
                    "f:selector": {}
                }
            })
        );
        assert_eq!(from_fields_v1(&v1), set);
        let p: Path = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(value_at(&obj, &p), Some(&json!("i")));
        let mut o = obj.clone();
        remove_at(
            &mut o,
            &[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"web\"}".into(),
                ".".into(),
            ],
        );
        assert_eq!(o["spec"]["containers"], json!([]));
    }

    /// What `changed` computed before it skipped equal fields: every leaf of both sides.
    fn changed_by_listing_every_leaf(
        old: &Value,
        new: &Value,
        schema: Option<Cursor>,
    ) -> (FieldSet, FieldSet) {
        let (before, after) = (fields_of(old, schema), fields_of(new, schema));
        let set = after
            .iter()
            .filter(|p| !before.contains(*p) || value_at(old, p) != value_at(new, p))
            .cloned()
            .collect();
        (set, before.difference(&after).cloned().collect())
    }

    #[test]
    fn changed_skips_equal_fields_and_finds_what_listing_every_leaf_finds() {
        let (root, d) = defs();
        let c = Cursor::new(&root, &d);
        let base = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "b"}, "uid": "u", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "web", "image": "i"}, {"name": "log", "image": "j"}],
                "finalizers": ["f", "g"], "args": ["1"], "selector": {"k": "v"}, "empty": {}, "n": null}});
        let variants = [
            json!({"metadata": {"name": "x", "labels": {"a": "c"}, "uid": "u", "resourceVersion": "2"}}),
            json!({"metadata": {"name": "x", "uid": "v"}, "spec": {"containers": [{"name": "web", "image": "k"}],
                "finalizers": ["g", "h"], "args": ["2"], "selector": {"k": "w", "l": "x"}, "empty": {"now": 1}, "n": 0}}),
            json!({"spec": {"containers": [{"name": "log", "image": "j"}, {"name": "web", "image": "i", "x": {}}],
                "finalizers": [], "args": [], "selector": {}, "empty": null}}),
            json!({"status": {"phase": "Running"}, "spec": "replaced"}),
            json!({}),
            json!("scalar"),
        ];
        for v in &variants {
            let mut new = base.clone();
            match (new.as_object_mut(), v.as_object()) {
                (Some(n), Some(m)) => {
                    for (k, x) in m {
                        n.insert(k.clone(), x.clone());
                    }
                }
                _ => new = v.clone(),
            }
            for (a, b) in [(&base, &new), (&new, &base)] {
                for schema in [Some(c), None] {
                    assert_eq!(
                        changed(a, b, schema),
                        changed_by_listing_every_leaf(a, b, schema),
                        "{a} -> {b}"
                    );
                }
            }
        }
        assert_eq!(
            changed(&base, &base, Some(c)),
            (FieldSet::new(), FieldSet::new())
        );
    }

    #[test]
    fn entries_updated_in_place_equal_entries_rebuilt_from_sets() {
        let (root, d) = defs();
        let c = Cursor::new(&root, &d);
        let base = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "web", "image": "i"}], "args": ["1"]},
            "status": {"phase": "Pending"}});
        // Entries: a creator owning metadata and spec, a status writer, an Apply entry, a
        // client-written entry with an empty field set (dropped), and one with extra keys.
        let mut stored = base.clone();
        record_update(None, &mut stored, "creator", "v1", "", Some(c));
        let mut with_status = stored.clone();
        with_status["status"]["phase"] = json!("Running");
        record_update(
            Some(&stored),
            &mut with_status,
            "kubelet",
            "v1",
            "status",
            Some(c),
        );
        let mut entries = with_status["metadata"]["managedFields"].clone();
        entries.as_array_mut().unwrap().extend([
            json!({"manager": "applier", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}}),
            json!({"manager": "empty", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {}}),
        ]);
        with_status["metadata"]["managedFields"] = entries;
        let writes = [
            // The status writer again (its own entry grows), another status writer (a new
            // entry; the first loses the field), labels changed (Apply entry loses it),
            // a field removed (every owner loses it), nothing changed.
            (
                "kubelet",
                "status",
                json!({"status": {"phase": "Succeeded"}}),
            ),
            (
                "other",
                "status",
                json!({"status": {"phase": "Failed", "podIP": "10.0.0.1"}}),
            ),
            (
                "editor",
                "",
                json!({"metadata": {"name": "x", "labels": {"a": "c"}}}),
            ),
            (
                "editor",
                "",
                json!({"spec": {"containers": [{"name": "web", "image": "i"}]}}),
            ),
            ("creator", "", json!({})),
        ];
        for (manager, sub, change) in writes {
            let mut new = with_status.clone();
            for (k, v) in change.as_object().unwrap() {
                new[k] = v.clone();
            }
            let (set, gone) = changed(&with_status, &new, Some(c));
            let mut by_sets = new.clone();
            record_by_sets(
                &with_status,
                &mut by_sets,
                set.clone(),
                gone.clone(),
                manager,
                "v1",
                sub,
            );
            let mut in_place = new.clone();
            assert!(record_in_place(
                &with_status,
                &mut in_place,
                &set,
                &gone,
                manager,
                "v1",
                sub
            ));
            // The times written are now's; the rest must be equal.
            let strip = |v: &mut Value| {
                for e in v["metadata"]["managedFields"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    e["time"] = json!("t");
                }
            };
            strip(&mut by_sets);
            strip(&mut in_place);
            assert_eq!(in_place, by_sets, "{manager} {sub} {change}");
        }
    }

    #[test]
    fn update_managers_are_capped_into_ancient_changes() {
        let mut obj = json!({"metadata": {"name": "x"}, "data": {}});
        record_update(None, &mut obj, "creator", "v1", "", None);
        // Twelve more managers, each writing its own key, a second apart.
        for i in 0..12 {
            let mut next = obj.clone();
            next["data"][format!("k{i}")] = json!("v");
            record_update(Some(&obj), &mut next, &format!("m{i:02}"), "v1", "", None);
            // Distinct seconds, so the age order is the write order.
            let mut es = read_entries(&next);
            if let Some(e) = es.iter_mut().find(|e| e.manager == format!("m{i:02}")) {
                e.time = format!("2026-01-01T00:00:{:02}Z", i + 1);
            }
            write_entries(&mut next, &es);
            obj = next;
        }
        let entries = read_entries(&obj);
        let names: Vec<&str> = entries.iter().map(|e| e.manager.as_str()).collect();
        assert_eq!(entries.len(), MAX_UPDATE_MANAGERS, "{names:?}");
        let bucket = entries
            .iter()
            .find(|e| e.manager == ANCIENT_CHANGES)
            .expect("a bucket");
        // The oldest writers' fields are not lost, only their names.
        for k in ["k0", "k1", "k2"] {
            assert!(
                bucket
                    .fields
                    .contains(&vec!["f:data".to_string(), format!("f:{k}")]),
                "{k} in {:?}",
                bucket.fields
            );
        }
        assert!(
            names.contains(&"m11") && !names.contains(&"m00"),
            "{names:?}"
        );
    }

    #[test]
    fn updates_take_fields_from_other_managers() {
        let old = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let mut first = old.clone();
        record_update(None, &mut first, "alice", "v1", "", None);
        let mut second = first.clone();
        second["data"]["a"] = json!("changed");
        second["data"].as_object_mut().unwrap().remove("b");
        record_update(Some(&first), &mut second, "bob", "v1", "", None);
        let entries = read_entries(&second);
        assert_eq!(
            entries.len(),
            1,
            "alice lost everything and drops out: {entries:?}"
        );
        assert_eq!(entries[0].manager, "bob");
        assert_eq!(
            to_fields_v1(&entries[0].fields),
            json!({"f:data": {"f:a": {}}})
        );
    }
}
