//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`metadata.name`, `metadata.namespace` and the per-type fields upstream supports).

use serde_json::Value;

use crate::object;
use crate::types::registry::ResourceType;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

/// Tokens of upstream's label selector lexer (k8s.io/apimachinery/pkg/labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The whole selector as tokens, ending with `End`: special symbols are read greedily while
/// the text so far is a token (`===` is `==` then `=`), anything else up to a space or
/// symbol is a keyword or an identifier.
fn lex(s: &str) -> Vec<(Tok, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && is_space(chars[i]) {
            i += 1;
        }
        let Some(&c) = chars.get(i) else {
            out.push((Tok::End, String::new()));
            return out;
        };
        if is_special(c) {
            let mut buf = String::new();
            let mut last: Option<(Tok, String)> = None;
            while let Some(&c) = chars.get(i).filter(|c| is_special(**c)) {
                buf.push(c);
                match keyword(&buf) {
                    Some(t) => last = Some((t, buf.clone())),
                    None if last.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            match last {
                Some(item) => out.push(item),
                None => out.push((Tok::Error, format!("error expected: keyword found '{buf}'"))),
            }
        } else {
            let start = i;
            while i < chars.len() && !is_special(chars[i]) && !is_space(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push((keyword(&word).unwrap_or(Tok::Identifier), word));
        }
    }
}

/// Upstream's recursive-descent parser over the tokens, with its error messages.
struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    /// The next token; `in`/`notin` read as identifiers where values are expected.
    fn lookahead(&self, values: bool) -> (Tok, String) {
        let (t, l) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::End, String::new()));
        match t {
            Tok::In | Tok::NotIn if values => (Tok::Identifier, l),
            _ => (t, l),
        }
    }
    fn consume(&mut self, values: bool) -> (Tok, String) {
        let item = self.lookahead(values);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Req>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(true);
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(true);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Req, String> {
        let (mut t, mut key) = self.consume(true);
        let not_exists = t == Tok::DoesNotExist;
        if not_exists {
            (t, key) = self.consume(true);
        }
        if t != Tok::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        validate_key(&key)?;
        let (next, _) = self.lookahead(true);
        if next == Tok::End || next == Tok::Comma {
            return Ok(if not_exists {
                Req::NotExists(key)
            } else {
                Req::Exists(key)
            });
        }
        if not_exists {
            // `!a=b`: upstream builds a does-not-exist requirement with values.
            return Err(
                "values: Invalid value: null: values set must be empty for exists and does not exist"
                    .to_string(),
            );
        }
        let (op, lit) = self.consume(false);
        match op {
            Tok::In | Tok::NotIn => {
                let values = self.values()?;
                for v in &values {
                    validate_value(v)?;
                }
                if values.is_empty() {
                    return Err("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".into());
                }
                Ok(if op == Tok::In {
                    Req::In(key, values)
                } else {
                    Req::NotIn(key, values)
                })
            }
            Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::GreaterThan | Tok::LessThan => {
                let value = self.exact_value()?;
                match op {
                    Tok::GreaterThan | Tok::LessThan => {
                        let n: i64 = value.parse().map_err(|_| {
                            format!("values[0]: Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be an integer")
                        })?;
                        Ok(if op == Tok::GreaterThan {
                            Req::Gt(key, n)
                        } else {
                            Req::Lt(key, n)
                        })
                    }
                    _ => {
                        validate_value(&value)?;
                        Ok(if op == Tok::NotEquals {
                            Req::NotEq(key, value)
                        } else {
                            Req::Eq(key, value)
                        })
                    }
                }
            }
            _ => Err(format!(
                "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        let (t, _) = self.lookahead(true);
        if t == Tok::End || t == Tok::Comma {
            return Ok(String::new());
        }
        match self.consume(true) {
            (Tok::Identifier, lit) => Ok(lit),
            (_, lit) => Err(format!("found '{lit}', expected: identifier")),
        }
    }

    /// `(a,b)`, sorted and without repeats as upstream's string set holds them.
    fn values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume(true);
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(true);
        let mut set = std::collections::BTreeSet::new();
        match t {
            Tok::Identifier | Tok::Comma => {
                loop {
                    let (t, lit) = self.consume(true);
                    match t {
                        Tok::Identifier => {
                            set.insert(lit);
                            let (t2, l2) = self.lookahead(true);
                            match t2 {
                                Tok::Comma => continue,
                                Tok::ClosedPar => break,
                                _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                            }
                        }
                        Tok::Comma => {
                            if set.is_empty() {
                                set.insert(String::new());
                            }
                            let (t2, _) = self.lookahead(true);
                            if t2 == Tok::ClosedPar {
                                set.insert(String::new());
                                break;
                            }
                            if t2 == Tok::Comma {
                                self.consume(true);
                                set.insert(String::new());
                            }
                        }
                        _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
                    }
                }
                if self.consume(true).0 != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
            }
            Tok::ClosedPar => {
                self.consume(true);
                set.insert(String::new());
            }
            _ => return Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
        Ok(set.into_iter().collect())
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    let errs = crate::types::validation::qualified_name_errors("key", key);
    if errs.is_empty() {
        return Ok(());
    }
    let details: Vec<&str> = errs
        .iter()
        .filter_map(|c| c.message.split_once(": ").map(|(_, d)| d))
        .map(|d| d.split_once(": ").map_or(d, |(_, d)| d))
        .collect();
    Err(format!(
        "key: Invalid value: {key:?}: {}",
        details.join("; ")
    ))
}

fn validate_value(v: &str) -> Result<(), String> {
    if crate::types::validation::is_label_value(v) {
        return Ok(());
    }
    Err(format!("values[0]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
}

impl LabelSelector {
    /// Parse as upstream's `labels.Parse`, with its error messages (the 400's text).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            items: lex(s),
            pos: 0,
        };
        p.parse().map(LabelSelector)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = object::labels(obj);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Fields each type can be selected by, beyond metadata.name and metadata.namespace.
fn type_fields(rt: &ResourceType) -> &'static [&'static str] {
    rt.strategy.field_selectors()
}

/// What an absent field reads as: Go's zero value of its type, as upstream formats it.
fn zero_value(field: &str) -> &'static str {
    match field {
        "spec.hostNetwork" | "spec.unschedulable" => "false",
        "status.replicas" | "status.successful" => "0",
        _ => "",
    }
}

impl FieldSelector {
    pub fn parse(rt: &ResourceType, s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in s.split(',') {
            let p = part.trim();
            let (field, eq, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: {p:?}; can't understand {p:?}"));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !type_fields(rt).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exact name this selector pins, if any (lets a list read one key).
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    /// The object paths `matches` reads (for a parse of only those).
    pub fn paths(&self) -> impl Iterator<Item = Vec<&str>> {
        self.0.iter().map(|(field, _, _)| match field.as_str() {
            "source" => vec!["source", "component"],
            f => f.split('.').collect(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    if field == "source" {
        // core/v1 Event's `source` selects on source.component.
        return obj
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let mut cur = obj;
    for seg in field.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return zero_value(field).to_string(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => zero_value(field).to_string(),
        other => other.to_string(),
    }
}

/// Whether a `LabelSelector` object (matchLabels, matchExpressions) selects `labels`; an
/// empty selector selects everything, an unknown operator nothing.
pub fn label_selector_matches(sel: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        if !m.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    sel.get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let have = labels.get(key).and_then(Value::as_str);
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("missing notin (x)", true),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
        assert!(LabelSelector::parse("n>3")
            .unwrap()
            .matches(&json!({"metadata": {"labels": {"n": "4"}}})));
        assert!(LabelSelector::parse("app in (web),!tier")
            .unwrap()
            .matches(&json!({"metadata": {"labels": {"app": "web"}}})));
    }

    #[test]
    fn label_selector_errors_are_upstreams() {
        for (sel, want) in [
            (
                "a===b",
                "unable to parse requirement: found '=', expected: identifier",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            (
                "=b",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("a,", "found '', expected: identifier after ','"),
            (
                "a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "a ~ b",
                "unable to parse requirement: found '~', expected: in, notin, =, ==, !=, gt, lt",
            ),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap_err(), want, "{sel}");
        }
    }
}
