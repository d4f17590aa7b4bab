//! The JSONPath subset CRD printer columns and scale paths use: `.a.b`, `.a[0]`, `.a[*].b`,
//! `['dotted.key']` and filters `[?(@.type=="Ready")]`, evaluated over a JSON value.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.path == "literal")]` (or `!=`); `None` for the literal tests existence.
    Filter(Vec<String>, bool, Option<Value>),
}

/// A parsed path; `parse` refuses anything outside the subset, so a CRD naming such a path
/// is refused at the door rather than printing nothing later.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

fn field_name(chars: &[char], i: &mut usize) -> String {
    let start = *i;
    while *i < chars.len() && (chars[*i].is_alphanumeric() || "_-$".contains(chars[*i])) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(t);
        let t = t.strip_prefix('$').unwrap_or(t);
        if !t.starts_with('.') && !t.starts_with('[') {
            return Err(format!("{text:?} must start with a '.'"));
        }
        let chars: Vec<char> = t.chars().collect();
        let mut i = 0;
        let mut steps = Vec::new();
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let name = field_name(&chars, &mut i);
                    if name.is_empty() {
                        return Err(format!("{text:?}: empty field name at {i}"));
                    }
                    steps.push(Step::Field(name));
                }
                '[' => {
                    let close = chars[i..]
                        .iter()
                        .position(|c| *c == ']')
                        .map(|p| p + i)
                        .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    steps.push(if inner == "*" {
                        Step::All
                    } else if let Some(f) =
                        inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')'))
                    {
                        parse_filter(f)
                            .ok_or_else(|| format!("{text:?}: unsupported filter {f:?}"))?
                    } else if (inner.starts_with('\'') && inner.ends_with('\'') && inner.len() >= 2)
                        || (inner.starts_with('"') && inner.ends_with('"') && inner.len() >= 2)
                    {
                        Step::Field(inner[1..inner.len() - 1].to_string())
                    } else {
                        Step::Index(
                            inner
                                .parse()
                                .map_err(|_| format!("{text:?}: bad index {inner:?}"))?,
                        )
                    });
                    i = close + 1;
                }
                c => return Err(format!("{text:?}: unexpected {c:?} at {i}")),
            }
        }
        Ok(JsonPath(steps))
    }

    /// Every value the path selects.
    pub fn eval<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![root];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in cur {
                match step {
                    Step::Field(f) => next.extend(v.get(f.as_str())),
                    Step::Index(n) => {
                        if let Some(a) = v.as_array() {
                            let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                            next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                        }
                    }
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(o) => next.extend(o.values()),
                        _ => {}
                    },
                    Step::Filter(path, eq, lit) => {
                        if let Some(a) = v.as_array() {
                            next.extend(a.iter().filter(|item| {
                                let got = path.iter().try_fold(*item, |acc, f| acc.get(f.as_str()));
                                match lit {
                                    None => got.is_some(),
                                    Some(l) => (got == Some(l)) == *eq,
                                }
                            }));
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The path as a JSON pointer, when it names exactly one field (for scale paths).
    pub fn as_pointer(&self) -> Option<String> {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Step::Field(f) => {
                    out.push('/');
                    out.push_str(&f.replace('~', "~0").replace('/', "~1"));
                }
                _ => return None,
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

fn parse_filter(f: &str) -> Option<Step> {
    let f = f.trim();
    let (lhs, eq, rhs) = if let Some((l, r)) = f.split_once("==") {
        (l, true, Some(r))
    } else if let Some((l, r)) = f.split_once("!=") {
        (l, false, Some(r))
    } else {
        (f, true, None)
    };
    let path: Vec<String> = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(String::from)
        .collect();
    if path.iter().any(String::is_empty) {
        return None;
    }
    let lit = match rhs.map(str::trim) {
        None => None,
        Some(r)
            if (r.starts_with('"') && r.ends_with('"'))
                || (r.starts_with('\'') && r.ends_with('\'')) =>
        {
            Some(Value::String(
                r.get(1..r.len().saturating_sub(1))?.to_string(),
            ))
        }
        Some(r) => Some(serde_json::from_str(r).ok()?),
    };
    Some(Step::Filter(path, eq, lit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_select_what_upstream_selects() {
        let obj = json!({"spec": {"replicas": 3, "a.b": "dot", "ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        let get = |p: &str| {
            JsonPath::parse(p)
                .unwrap()
                .eval(&obj)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(get(".spec.replicas"), vec![json!(3)]);
        assert_eq!(get("{.spec.replicas}"), vec![json!(3)]);
        assert_eq!(get(".spec['a.b']"), vec![json!("dot")]);
        assert_eq!(get(".spec.ports[*].port"), vec![json!(80), json!(443)]);
        assert_eq!(get(".spec.ports[-1].port"), vec![json!(443)]);
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            get(".status.conditions[?(@.type!='Ready')].type"),
            vec![json!("Synced")]
        );
        assert!(get(".spec.missing").is_empty());
        assert_eq!(
            JsonPath::parse(".spec.replicas")
                .unwrap()
                .as_pointer()
                .as_deref(),
            Some("/spec/replicas")
        );
        for bad in ["spec.replicas", ".spec[", ".spec..x", ".spec[?(x)]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
