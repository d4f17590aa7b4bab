//! Which requests a policy or binding applies to: `matchConstraints` / `matchResources`
//! (resource rules with operations and scope, exclusions, namespace and object selectors).

use serde_json::{Map, Value};

use crate::types::selector::label_selector_matches;

/// What a request addresses, as resource rules see it.
pub struct RequestShape<'a> {
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespaced: bool,
    /// Whether the object is a Namespace (its own labels meet the namespace selector).
    pub is_namespace: bool,
}

/// One `NamedRuleWithOperations`.
#[derive(Debug, Default)]
pub struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    scope: String,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        Rule {
            operations: strings(v, "operations"),
            groups: strings(v, "apiGroups"),
            versions: strings(v, "apiVersions"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            scope: v
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string(),
        }
    }

    /// `any_version`: matchPolicy Equivalent, where a rule naming another version of the
    /// same group and resource matches too (capstan serves each object in every version
    /// unchanged, so no conversion is needed for the policy to see it).
    fn matches(&self, r: &RequestShape<'_>, name: &str, any_version: bool) -> bool {
        let scope_ok = match self.scope.as_str() {
            "Cluster" => !r.namespaced,
            "Namespaced" => r.namespaced,
            _ => true,
        };
        let names_ok =
            self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name);
        scope_ok
            && names_ok
            && has(&self.operations, r.operation)
            && has(&self.groups, r.group)
            && (any_version || has(&self.versions, r.version))
            && self.resources.iter().any(|res| resource_matches(res, r))
    }
}

/// `pods`, `pods/status`, `*` (every resource, no subresource), `*/*`, `pods/*`, `*/scale`.
fn resource_matches(rule: &str, r: &RequestShape<'_>) -> bool {
    let (res, sub) = rule.split_once('/').unwrap_or((rule, ""));
    (res == "*" || res == r.resource) && (sub == "*" || sub == r.subresource)
}

/// A `MatchResources`.
#[derive(Debug, Default)]
pub struct Match {
    rules: Vec<Rule>,
    exclude: Vec<Rule>,
    namespace_selector: Option<Value>,
    object_selector: Option<Value>,
    exact: bool,
}

/// The labels of the objects a request's selectors look at.
pub struct Labels<'a> {
    /// The namespace's (for a Namespace, its own); None for cluster-scoped requests.
    pub namespace: Option<&'a Map<String, Value>>,
    pub object: Option<&'a Map<String, Value>>,
    pub old_object: Option<&'a Map<String, Value>>,
}

impl Match {
    pub fn from_json(v: Option<&Value>) -> Match {
        let Some(v) = v else {
            return Match::default();
        };
        let rules = |f: &str| {
            v.get(f)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Rule::from_json)
                .collect()
        };
        Match {
            rules: rules("resourceRules"),
            exclude: rules("excludeResourceRules"),
            namespace_selector: v
                .get("namespaceSelector")
                .filter(|s| s.is_object())
                .cloned(),
            object_selector: v.get("objectSelector").filter(|s| s.is_object()).cloned(),
            exact: v.get("matchPolicy").and_then(Value::as_str) == Some("Exact"),
        }
    }

    /// Whether the resource rules select the request (a binding with no rules selects
    /// whatever its policy does: `empty_matches_all`).
    pub fn selects_resource(
        &self,
        r: &RequestShape<'_>,
        name: &str,
        empty_matches_all: bool,
    ) -> bool {
        if self.exclude.iter().any(|x| x.matches(r, name, false)) {
            return false;
        }
        if self.rules.is_empty() {
            return empty_matches_all;
        }
        self.rules.iter().any(|x| x.matches(r, name, false))
            || (!self.exact && self.rules.iter().any(|x| x.matches(r, name, true)))
    }

    /// Whether a namespace selector is set that needs the namespace's labels.
    pub fn needs_namespace(&self) -> bool {
        self.namespace_selector.is_some()
    }

    /// The namespace and object selectors. A cluster-scoped request other than a
    /// Namespace passes any namespace selector, as upstream's matcher lets it.
    pub fn selects_labels(&self, r: &RequestShape<'_>, labels: &Labels<'_>) -> bool {
        let empty = Map::new();
        if let Some(sel) = &self.namespace_selector {
            if (r.namespaced || r.is_namespace)
                && !label_selector_matches(sel, labels.namespace.unwrap_or(&empty))
            {
                return false;
            }
        }
        if let Some(sel) = &self.object_selector {
            // Either version of the object may match; with neither, empty labels do.
            let present: Vec<&Map<String, Value>> = [labels.object, labels.old_object]
                .into_iter()
                .flatten()
                .collect();
            let matched = if present.is_empty() {
                label_selector_matches(sel, &empty)
            } else {
                present.iter().any(|l| label_selector_matches(sel, l))
            };
            if !matched {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape<'a>(op: &'a str, resource: &'a str, sub: &'a str) -> RequestShape<'a> {
        RequestShape {
            operation: op,
            group: "apps",
            version: "v1",
            resource,
            subresource: sub,
            namespaced: true,
            is_namespace: false,
        }
    }

    #[test]
    fn resource_rules_operations_subresources_and_exclusions() {
        let m = Match::from_json(Some(&json!({
            "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments", "*/scale"]}],
            "excludeResourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["*"], "resources": ["deployments"], "resourceNames": ["skip"]}]
        })));
        assert!(m.selects_resource(&shape("CREATE", "deployments", ""), "a", false));
        assert!(!m.selects_resource(&shape("DELETE", "deployments", ""), "a", false));
        assert!(!m.selects_resource(&shape("UPDATE", "deployments", "status"), "a", false));
        assert!(m.selects_resource(&shape("UPDATE", "statefulsets", "scale"), "a", false));
        assert!(!m.selects_resource(&shape("CREATE", "deployments", ""), "skip", false));
        let wild = Match::from_json(Some(
            &json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"], "scope": "Cluster"}]}),
        ));
        assert!(!wild.selects_resource(&shape("CREATE", "deployments", ""), "a", false));
    }

    #[test]
    fn namespace_and_object_selectors() {
        let m = Match::from_json(Some(&json!({
            "namespaceSelector": {"matchLabels": {"environment": "test"}},
            "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}
        })));
        let test = json!({"environment": "test"});
        let prod = json!({"environment": "prod"});
        let plain = json!({});
        let skip = json!({"skip": "y"});
        let r = shape("CREATE", "deployments", "");
        let l = |ns: &'static Value, o: &'static Value| Labels {
            namespace: ns.as_object(),
            object: o.as_object(),
            old_object: None,
        };
        let (test, prod, plain, skip) = (
            Box::leak(Box::new(test)),
            Box::leak(Box::new(prod)),
            Box::leak(Box::new(plain)),
            Box::leak(Box::new(skip)),
        );
        assert!(m.selects_labels(&r, &l(test, plain)));
        assert!(!m.selects_labels(&r, &l(prod, plain)));
        assert!(!m.selects_labels(&r, &l(test, skip)));
    }
}
