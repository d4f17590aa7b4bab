//! The bounds on what a request can make the server build: nesting depth (checked on bytes
//! before any decoder recurses, and on every decoded or patched object), sizes of values.
//! Stored objects are parsed here too, at any depth the door let through.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::status::ApiError;

/// Deepest nesting of objects and arrays an object may have: Go's encoding/json (and so
/// kube-apiserver) refuses deeper, and goyaml has the same bound for YAML.
pub const MAX_DEPTH: usize = 10_000;

/// Stack for every thread that walks objects (request workers, CEL threads): recursive
/// code over an object MAX_DEPTH deep needs a few KiB a level. Reserved, not committed.
pub const THREAD_STACK_BYTES: usize = 64 << 20;

/// Upstream's `--max-request-bytes`-derived bound on what a JSON patch may copy
/// (`JSONPatchMaxCopyBytes`), and on any object the server is asked to store.
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// The largest object the server stores (with its managedFields). Upstream's practical
/// bound is etcd's 1.5 MiB request limit; this is looser, but bounded, so repeated patches
/// cannot grow one object without end.
pub const MAX_STORED_BYTES: usize = 6 * 1024 * 1024;

/// Upstream's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPS: usize = 10_000;

/// The deepest nesting of `[`/`{` in JSON text, without recursion and without decoding;
/// stops counting once past `limit` (the answer is then `limit + 1`).
pub fn json_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return limit + 1;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The nesting depth of a decoded value (a scalar is 0), iteratively; stops past `limit`.
pub fn value_depth(v: &Value, limit: usize) -> usize {
    let mut max = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d);
                if max > limit {
                    return limit + 1;
                }
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(o) => {
                max = max.max(d);
                if max > limit {
                    return limit + 1;
                }
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// The length of `v` serialized as compact JSON (strings counted unescaped, a close lower
/// bound), iteratively; stops counting once past `limit`.
pub fn value_size(v: &Value, limit: usize) -> usize {
    let mut total = 0usize;
    let mut stack: Vec<&Value> = vec![v];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(o) => {
                stack.extend(o.values());
                2 + o.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
        if total > limit {
            return total;
        }
    }
    total
}

pub fn too_deep(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} nests objects or arrays deeper than the limit of {MAX_DEPTH} levels"
    ))
}

/// Refuse JSON text nested deeper than MAX_DEPTH before anything parses it.
pub fn check_json_depth(bytes: &[u8], what: &str) -> Result<(), ApiError> {
    if json_depth(bytes, MAX_DEPTH) > MAX_DEPTH {
        return Err(too_deep(what));
    }
    Ok(())
}

/// Refuse a decoded or patched object nested deeper than MAX_DEPTH.
pub fn check_value_depth(v: &Value, what: &str) -> Result<(), ApiError> {
    if value_depth(v, MAX_DEPTH) > MAX_DEPTH {
        return Err(too_deep(what));
    }
    Ok(())
}

/// Parse JSON a client sent: depth-checked on the bytes, then parsed without serde_json's
/// fixed 128-level limit (which is below what upstream serves).
pub fn parse_request_json<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<Result<T, serde_json::Error>, ApiError> {
    check_json_depth(bytes, what)?;
    Ok(parse_unbounded(bytes))
}

/// Parse JSON the server wrote itself (stored objects, its own responses): whatever depth
/// it has, the door bounded it, and server-added wrapping (managedFields, lists, events)
/// must never make it unreadable.
pub fn parse_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    parse_unbounded(bytes)
}

fn parse_unbounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// A configuration file (audit policy, encryption configuration, kubeconfig) in YAML or
/// JSON, read as upstream reads them (sigs.k8s.io/yaml): into a JSON value first, then into
/// its type, so an unquoted `123` is a number and not a string. One YAML decoder (into a
/// value) serves every file type: a typed YAML decoder per type cost ~20-40 KB of the binary
/// for each struct it reached. A value of the wrong shape is named by its path in the file
/// (`rules[0].level: unknown variant ...`), which the typed YAML decoder gave as a line.
pub fn parse_config_yaml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(parse_request_yaml(text)?).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => e.into_inner().to_string(),
            _ => format!("{path}: {}", e.into_inner()),
        }
    })
}

/// YAML a client sent, with goyaml's depth bound and bounds on aliases and node counts so
/// that neither deep nesting nor alias expansion ("billion laughs") can blow up.
pub fn parse_request_yaml(text: &str) -> Result<Value, String> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    // A 3 MiB body cannot hold more nodes than this; the default (250k) is below what a
    // large but ordinary list can have.
    budget.max_nodes = MAX_OBJECT_BYTES;
    budget.max_events = 2 * MAX_OBJECT_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        // Error texts quote the input; a hostile line can be megabytes long.
        let mut m = e.to_string();
        if m.len() > 1024 {
            let mut cut = 1024;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
            m.push_str(" …");
        }
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str("{\"a\":");
        }
        s.push('1');
        for _ in 0..depth {
            s.push('}');
        }
        s
    }

    #[test]
    fn depth_of_text_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":"[[[{{{\"[["}"#, 100), 1);
        assert_eq!(json_depth(br#"[[],[[]]]"#, 100), 3);
        assert_eq!(json_depth(nested(50).as_bytes(), 100), 50);
        assert_eq!(json_depth(nested(500).as_bytes(), 100), 101);
        assert_eq!(json_depth(b"7", 100), 0);
    }

    #[test]
    fn depth_of_values_matches_depth_of_text() {
        for d in [1, 2, 127, 129, 300] {
            let text = nested(d);
            let v: Value = parse_stored(text.as_bytes()).unwrap();
            assert_eq!(value_depth(&v, 1000), d);
            assert_eq!(json_depth(text.as_bytes(), 1000), d);
        }
    }

    /// Run `f` on a thread with the server's stack size, as request handlers do.
    fn on_server_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK_BYTES)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn request_json_is_refused_past_the_limit_and_served_below_it() {
        on_server_stack(|| {
            let ok = nested(MAX_DEPTH);
            let v: Value = parse_request_json(ok.as_bytes(), "the body")
                .unwrap()
                .unwrap();
            assert_eq!(value_depth(&v, usize::MAX), MAX_DEPTH);
            // Everything the server does with it recurses too: encode, compare, drop.
            let text = serde_json::to_vec(&v).unwrap();
            assert_eq!(text, ok.as_bytes());
            assert_eq!(v.clone(), v);
            drop(v);
            let deep = nested(MAX_DEPTH + 1);
            let e = parse_request_json::<Value>(deep.as_bytes(), "the body").unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains("10000"), "{}", e.message);
        });
    }

    #[test]
    fn yaml_depth_and_alias_bombs_are_refused() {
        on_server_stack(yaml_bombs);
    }

    fn yaml_bombs() {
        let mut deep = String::new();
        for i in 0..(MAX_DEPTH + 5) {
            deep.push_str(&" ".repeat(i));
            deep.push_str("a:\n");
        }
        assert!(parse_request_yaml(&deep).is_err());
        let flow = format!("{}1{}", "[".repeat(80_000), "]".repeat(80_000));
        assert!(parse_request_yaml(&flow).is_err());
        let mut laughs = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            laughs.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        assert!(parse_request_yaml(&laughs).is_err());
        let ok: Value = parse_request_yaml("a: [1, {b: c}]\nd: '2'\n").unwrap();
        assert_eq!(ok, serde_json::json!({"a": [1, {"b": "c"}], "d": "2"}));
    }

    #[test]
    fn a_config_files_wrong_value_is_named_by_its_path() {
        #[derive(Debug, serde::Deserialize)]
        struct Rule {
            #[allow(dead_code)]
            level: u8,
        }
        #[derive(Debug, serde::Deserialize)]
        struct File {
            #[allow(dead_code)]
            rules: Vec<Rule>,
        }
        let ok: File = parse_config_yaml("rules:\n- level: 1\n").unwrap();
        assert_eq!(ok.rules.len(), 1);
        let err = parse_config_yaml::<File>("rules:\n- level: 1\n- level: high\n").unwrap_err();
        assert!(
            err.starts_with("rules[1].level: invalid type: string"),
            "{err}"
        );
        // A wrong root has no path to name.
        let err = parse_config_yaml::<File>("7\n").unwrap_err();
        assert!(err.starts_with("invalid type: integer `7`"), "{err}");
        assert!(parse_config_yaml::<File>("a: [").is_err());
    }

    #[test]
    fn sizes_are_counted_and_capped() {
        let v = serde_json::json!({"ab": ["x", 1, null, true]});
        let exact = serde_json::to_vec(&v).unwrap().len();
        let counted = value_size(&v, usize::MAX);
        assert!(
            counted >= exact - 8 && counted <= exact + 16,
            "{counted} vs {exact}"
        );
        let big = Value::Array(vec![Value::String("x".repeat(1000)); 1000]);
        assert!(value_size(&big, 10_000) > 10_000);
    }
}
