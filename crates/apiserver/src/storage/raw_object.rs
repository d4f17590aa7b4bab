//! Serves stored objects without rebuilding them: finds the top-level `metadata` of the
//! stored JSON and splices in the `resourceVersion`, so a list copies bytes, not trees.

use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// The stored object's `metadata` value, as a slice of `stored`, with its offset.
fn metadata(stored: &[u8]) -> Option<(usize, &str)> {
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
    let empty = meta[1..].trim_start().starts_with('}');
    out.reserve(stored.len() + 48);
    out.extend_from_slice(&stored[..at + 1]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at + 1..]);
    true
}

/// The stored object's metadata, parsed alone (for label selectors), without the rest.
pub fn parse_metadata(stored: &[u8]) -> Option<Value> {
    let (_, meta) = metadata(stored)?;
    serde_json::from_str(meta).ok()
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
        let m = parse_metadata(br#"{"data":{"a":"b"},"metadata":{"labels":{"x":"y"}}}"#).unwrap();
        assert_eq!(m["labels"]["x"], "y");
    }
}
