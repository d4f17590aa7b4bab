//! Serves stored objects without rebuilding them: finds the top-level `metadata` of the
//! stored JSON and splices in the `resourceVersion`, so a list copies bytes, not trees.

use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// The stored object's `metadata` value, as a slice of `stored`, with its offset. Every
/// watcher of a kind splices every event, so the bytes are first scanned for the
/// top-level keys (`scan_metadata`); what that scan does not expect is parsed.
fn metadata(stored: &[u8]) -> Option<(usize, &str)> {
    match scan_metadata(stored) {
        Some((at, end)) => Some((at, std::str::from_utf8(&stored[at..end]).ok()?)),
        None => parse_metadata(stored),
    }
}

/// The span of the top-level `metadata` object in `b`, found by skipping over the other
/// values byte by byte (strings with `memchr`) rather than parsing them. None for
/// anything unexpected — a key with escapes, no `metadata`, trailing bytes, unbalanced
/// brackets — and the caller parses instead.
fn scan_metadata(b: &[u8]) -> Option<(usize, usize)> {
    let ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    };
    // The index just past the string whose opening quote is at `i`.
    let string_end = |mut i: usize| -> Option<usize> {
        i += 1;
        loop {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i] == b'"' {
                return Some(i + 1);
            }
            i += 2;
        }
    };
    let value_end = |mut i: usize| -> Option<usize> {
        match b.get(i)? {
            b'"' => string_end(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match b.get(i)? {
                        b'"' => {
                            i = string_end(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while !matches!(
                    b.get(i),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    i += 1;
                }
                Some(i)
            }
        }
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    let mut found = None;
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        i = ws(key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(i + 1);
        let end = value_end(i)?;
        if key == b"metadata" {
            found = (b.get(i) == Some(&b'{')).then_some((i, end));
        }
        i = ws(end);
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (ws(i + 1) == b.len()).then_some(())?;
    found
}

/// `metadata` by parsing (serde_json validates every value on the way).
fn parse_metadata(stored: &[u8]) -> Option<(usize, &str)> {
    struct Finder;
    impl<'de> Visitor<'de> for Finder {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            // Borrowed keys: a key with escapes fails here and the caller takes the slow path.
            while let Some(key) = map.next_key::<&'de str>()? {
                let value: &'de RawValue = map.next_value()?;
                if key == "metadata" {
                    found = Some(value);
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(stored);
    let raw = de.deserialize_map(Finder).ok()??;
    de.end().ok()?;
    let text = raw.get();
    let offset = (text.as_ptr() as usize).checked_sub(stored.as_ptr() as usize)?;
    (offset + text.len() <= stored.len() && text.starts_with('{')).then_some((offset, text))
}

/// Append the stored object to `out` with `metadata.resourceVersion` set to `rv`. Returns
/// false (and appends nothing) if the bytes are not an object with an object `metadata`.
pub fn append_with_resource_version(stored: &[u8], rv: i64, out: &mut Vec<u8>) -> bool {
    let Some((at, meta)) = metadata(stored) else {
        return false;
    };
    out.reserve(stored.len() + 48);
    out.extend_from_slice(&stored[..at]);
    push_metadata(meta, rv, out);
    out.extend_from_slice(&stored[at + meta.len()..]);
    true
}

/// Append the stored object as a PartialObjectMetadata (its metadata, with
/// `resourceVersion` set to `rv`, under meta.k8s.io/v1's kind), as a metadata informer
/// reads it. False (nothing appended) as for `append_with_resource_version`.
pub fn append_partial_metadata(stored: &[u8], rv: i64, out: &mut Vec<u8>) -> bool {
    let Some((_, meta)) = metadata(stored) else {
        return false;
    };
    out.reserve(meta.len() + 128);
    out.extend_from_slice(
        br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#,
    );
    push_metadata(meta, rv, out);
    out.push(b'}');
    true
}

/// `meta` (an object's text) with `resourceVersion` first.
fn push_metadata(meta: &str, rv: i64, out: &mut Vec<u8>) {
    let empty = meta[1..].trim_start().starts_with('}');
    out.extend_from_slice(b"{\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&meta.as_bytes()[1..]);
}

/// The fields of a stored object some reader needs (a selector's), as a tree of keys: a
/// leaf keeps its whole value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paths {
    whole: bool,
    keys: Vec<(String, Paths)>,
}

impl Paths {
    /// Keep the value at `path` (its segments from the object's top).
    pub fn add(&mut self, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            self.whole = true;
            self.keys.clear();
            return;
        };
        if self.whole {
            return;
        }
        let i = match self.keys.iter().position(|(k, _)| k == first) {
            Some(i) => i,
            None => {
                self.keys.push(((*first).to_string(), Paths::default()));
                self.keys.len() - 1
            }
        };
        self.keys[i].1.add(rest);
    }

    pub fn is_empty(&self) -> bool {
        !self.whole && self.keys.is_empty()
    }
}

/// The stored object with only `paths` in it: what evaluating a selector needs, without
/// building the rest (a pod's containers, status…) as a tree. None if it is not JSON.
pub fn parse_paths(stored: &[u8], paths: &Paths) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(stored);
    let v = serde::de::DeserializeSeed::deserialize(Pruned(paths), &mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

struct Pruned<'a>(&'a Paths);

impl<'de> serde::de::DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            return serde::Deserialize::deserialize(d);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(i) = map.next_key_seed(KeyIndex(&self.0.keys))? {
            match i {
                Some(i) => {
                    let (name, sub) = &self.0.keys[i];
                    let v = map.next_value_seed(Pruned(sub))?;
                    out.insert(name.clone(), v);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
    // A path through an array or a scalar selects nothing below it; scalars are kept so
    // that reading the path finds no object there, as with the whole value.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A map key as its index among the wanted keys (None: skip its value), without
/// allocating the key.
struct KeyIndex<'a>(&'a [(String, Paths)]);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|(k, _)| k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(stored: &str, rv: i64) -> Option<Value> {
        let mut out = Vec::new();
        append_with_resource_version(stored.as_bytes(), rv, &mut out)
            .then(|| serde_json::from_slice(&out).expect("spliced output is JSON"))
    }

    #[test]
    fn resource_version_is_spliced_into_metadata() {
        let v = splice(
            r#"{"apiVersion":"v1","data":{"metadata":{"x":"}"}},"kind":"ConfigMap","metadata":{"name":"a","labels":{"k":"v"}}}"#,
            42,
        )
        .unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        assert_eq!(v["data"]["metadata"], serde_json::json!({"x": "}"}));
        assert!(v["data"]["metadata"].get("resourceVersion").is_none());
        let v = splice(r#"{ "metadata" : { } , "kind":"X"}"#, 7).unwrap();
        assert_eq!(v["metadata"], serde_json::json!({"resourceVersion": "7"}));
    }

    #[test]
    fn the_scan_finds_what_the_parse_finds() {
        for doc in [
            r#"{"apiVersion":"v1","data":{"metadata":{"x":"}"}},"kind":"ConfigMap","metadata":{"name":"a","labels":{"k":"v"}}}"#,
            r#"{ "metadata" : { } , "kind":"X"}"#,
            r#"{"a":[1,{"b":"\"]}"},true,null,-1.5e3],"metadata":{"n":"\\","q":"\"{"},"z":{}}"#,
            r#"{"metadata":{"a":1},"metadata":{"b":2}}"#,
            "{\n\t\"metadata\"\r:{\"a\":[]}\n}\n",
        ] {
            let scanned = scan_metadata(doc.as_bytes()).map(|(a, e)| (a, &doc[a..e]));
            assert!(scanned.is_some(), "{doc}");
            assert_eq!(scanned, parse_metadata(doc.as_bytes()), "{doc}");
        }
        // What the scan does not take, the parse decides.
        for odd in [
            r#"{"kind":"X"}"#,
            r#"{"metadata":"x"}"#,
            r#"{"meta\u0064ata":{}}"#,
            r#"{"metadata":{}} trailing"#,
            r#"{"metadata":{"a":[}}"#,
            r#"{"metadata":{"#,
            r#"[1,2]"#,
            "",
        ] {
            assert_eq!(scan_metadata(odd.as_bytes()), None, "{odd}");
        }
    }

    #[test]
    fn unexpected_shapes_take_the_slow_path() {
        for bad in [
            r#"{"kind":"X"}"#,
            r#"{"metadata":"x"}"#,
            r#"[1,2]"#,
            r#"{"metadata":{}} trailing"#,
            r#"{"meta\u0064ata":{}}"#,
            r#"{"metadata":{"name":"a"}"#,
        ] {
            assert!(splice(bad, 1).is_none(), "{bad}");
        }
    }

    #[test]
    fn metadata_parses_alone() {
        let mut labels = Paths::default();
        labels.add(&["metadata", "labels"]);
        let m = parse_paths(
            br#"{"data":{"a":"b"},"metadata":{"labels":{"x":"y"}}}"#,
            &labels,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"]["x"], "y");
        assert!(m.get("data").is_none());
    }

    #[test]
    fn partial_metadata_is_the_metadata_with_its_resource_version() {
        let mut out = Vec::new();
        assert!(append_partial_metadata(
            br#"{"kind":"Pod","metadata":{"name":"a"},"spec":{"x":1}}"#,
            9,
            &mut out
        ));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "a", "resourceVersion": "9"}})
        );
        assert!(!append_partial_metadata(br#"{"kind":"X"}"#, 1, &mut out));
    }

    #[test]
    fn a_pruned_parse_keeps_only_the_paths_asked_for() {
        let mut paths = Paths::default();
        paths.add(&["metadata", "labels"]);
        paths.add(&["spec", "nodeName"]);
        paths.add(&["status", "phase", "deeper"]);
        let stored = br#"{"metadata":{"name":"a","labels":{"x":"y","z":"w"}},
            "spec":{"containers":[{"name":"c"}],"nodeName":"n1","n\u0061me":"esc"},
            "status":{"phase":"Running"},"extra":{"metadata":{}}}"#;
        let v = parse_paths(stored, &paths).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"labels": {"x": "y", "z": "w"}},
                "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
        );
        // A shorter path keeps the whole subtree, whatever was asked below it.
        paths.add(&["spec"]);
        let v = parse_paths(stored, &paths).unwrap();
        assert_eq!(v["spec"]["containers"][0]["name"], "c");
        assert!(parse_paths(b"{\"metadata\":", &paths).is_none());
        assert!(Paths::default().is_empty());
    }
}
