//! Finds duplicate keys in a JSON body (serde_json keeps the last one silently), so
//! `fieldValidation` can refuse or warn about them as upstream does.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Upstream's strict JSON decoder (sigs.k8s.io/json) keeps each distinct strict error once
/// and at most 100 of them, so a body with 350k repeated keys costs one pass and yields a
/// handful of messages, not 350k.
const MAX_FOUND: usize = 100;

#[derive(Default)]
struct Found {
    paths: Vec<String>,
    seen: HashSet<String>,
}

impl Found {
    fn add(&mut self, path: &str) {
        if self.paths.len() < MAX_FOUND && self.seen.insert(path.to_string()) {
            self.paths.push(path.to_string());
        }
    }
}

struct Walk<'a> {
    path: String,
    found: &'a mut Found,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.add(&path);
            }
            map.next_value_seed(Walk {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk {
                path: format!("{}[{i}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Paths of keys that appear twice in their object (`metadata.name`, `spec.items[0].x`),
/// each path once, in the order first seen, at most 100.
pub fn find(body: &[u8]) -> Vec<String> {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    if (Walk {
        path: String::new(),
        found: &mut found,
    })
    .deserialize(&mut de)
    .is_err()
    {
        return Vec::new(); // malformed JSON is reported by the real decode
    }
    found.paths
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_nested_duplicates() {
        let body = br#"{"a":1,"b":{"c":1,"c":2},"l":[{"x":1,"x":1}],"a":3}"#;
        assert_eq!(super::find(body), ["b.c", "l[0].x", "a"]);
        assert!(super::find(br#"{"a":{"a":1}}"#).is_empty());
    }

    #[test]
    fn many_duplicates_are_reported_once_each_and_bounded() {
        let mut body = String::from(r#"{"a":0"#);
        for _ in 0..350_000 {
            body.push_str(r#","a":1"#);
        }
        body.push('}');
        let started = std::time::Instant::now();
        assert_eq!(super::find(body.as_bytes()), ["a"]);
        // Linear: a quadratic scan of 350k keys would take minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));

        let distinct: String = (0..500).map(|i| format!(r#""k{i}":1,"k{i}":2,"#)).collect();
        let body = format!("{{{}\"z\":0}}", distinct);
        let found = super::find(body.as_bytes());
        assert_eq!(found.len(), 100);
        assert_eq!(found[0], "k0");
    }
}
