//! RBAC policy rules as upstream evaluates them: a `PolicyRule` read once from a stored Role
//! or ClusterRole, matched against a request, and rule coverage for escalation checks.

use serde_json::{json, Value};

use crate::serving::request_info::RequestInfo;

/// One `rules[]` entry of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// The strings of the array at `key` of `v` (none if it is missing or not an array).
pub(super) fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    /// Read one rule; absent or null lists are empty (stored objects passed validation).
    pub fn from_json(rule: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(rule, "verbs"),
            api_groups: strings(rule, "apiGroups"),
            resources: strings(rule, "resources"),
            resource_names: strings(rule, "resourceNames"),
            non_resource_urls: strings(rule, "nonResourceURLs"),
        }
    }

    /// The `rules` of a Role or ClusterRole object.
    pub fn list_from(obj: &Value) -> Vec<PolicyRule> {
        obj.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(PolicyRule::from_json).collect())
            .unwrap_or_default()
    }

    /// The API's shape, empty lists omitted.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        for (k, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() {
                v[k] = json!(list);
            }
        }
        v
    }

    /// Upstream's `RuleAllows`.
    pub fn allows(&self, req: &Request<'_>) -> bool {
        if !verb_matches(&self.verbs, req.info.verb.as_str()) {
            return false;
        }
        if req.info.resource_request {
            any_or(&self.api_groups, &req.info.api_group)
                && resource_matches(&self.resources, &req.combined, &req.info.subresource)
                && (self.resource_names.is_empty() || self.resource_names.contains(&req.info.name))
        } else {
            self.non_resource_urls
                .iter()
                .any(|u| url_matches(u, &req.info.path))
        }
    }

    /// Upstream's `CompactString`, used in escalation refusals:
    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{k}:{}", go_quoted_list(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quoted_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// A request's attributes prepared once for matching against many rules.
pub struct Request<'a> {
    pub info: &'a RequestInfo,
    /// `resource/subresource`, or the resource alone.
    pub combined: String,
}

impl<'a> Request<'a> {
    pub fn new(info: &'a RequestInfo) -> Request<'a> {
        let combined = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        Request { info, combined }
    }
}

fn verb_matches(verbs: &[String], verb: &str) -> bool {
    verbs.iter().any(|v| v == "*" || v == verb)
}

fn any_or(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// `*`, the exact `resource/subresource`, or `*/subresource`.
fn resource_matches(resources: &[String], combined: &str, subresource: &str) -> bool {
    resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// `*`, the exact path, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    if rule == "*" || rule == path {
        return true;
    }
    rule.strip_suffix('*')
        .is_some_and(|prefix| path.starts_with(prefix))
}

/// Upstream's `BreakdownRule`: one rule per verb × group × resource × name (or per URL).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            let names: Vec<Option<&String>> = if rule.resource_names.is_empty() {
                vec![None]
            } else {
                rule.resource_names.iter().map(Some).collect()
            };
            for name in names {
                for verb in &rule.verbs {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        resource_names: name.into_iter().cloned().collect(),
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| set.contains(w))
}

/// Upstream's `resourceCoversAll`: `*`, exact names, or `*/subresource` for subresources.
fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if owner.iter().any(|r| r == "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        if owner.contains(path) {
            return true;
        }
        match path.split_once('/') {
            Some((_, sub)) => owner.contains(&format!("*/{sub}")),
            None => false,
        }
    })
}

/// Upstream's `ruleCovers`: whether `owner` grants everything `wanted` (one broken-down
/// rule) does.
fn rule_covers(owner: &PolicyRule, wanted: &PolicyRule) -> bool {
    let verbs = owner.verbs.iter().any(|v| v == "*") || has_all(&owner.verbs, &wanted.verbs);
    let groups =
        owner.api_groups.iter().any(|g| g == "*") || has_all(&owner.api_groups, &wanted.api_groups);
    let resources = resources_cover(&owner.resources, &wanted.resources);
    let urls = wanted
        .non_resource_urls
        .iter()
        .all(|w| owner.non_resource_urls.iter().any(|o| url_matches(o, w)));
    let names = owner.resource_names.is_empty()
        || (!wanted.resource_names.is_empty()
            && has_all(&owner.resource_names, &wanted.resource_names));
    verbs && groups && resources && urls && names
}

/// Upstream's `Covers`: whether `owner` grants all of `wanted`, and what it lacks.
pub fn covers(owner: &[PolicyRule], wanted: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let missing: Vec<PolicyRule> = wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    (missing.is_empty(), missing)
}

/// Upstream's `CompactRules`: simple rules (one group, one resource, no names) that differ
/// only in verb become one rule with all those verbs.
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let simple = rule.api_groups.len() == 1
            && rule.resources.len() == 1
            && rule.resource_names.is_empty()
            && rule.non_resource_urls.is_empty();
        let existing = simple
            .then(|| {
                out.iter_mut().find(|o| {
                    o.api_groups == rule.api_groups
                        && o.resources == rule.resources
                        && o.resource_names.is_empty()
                        && o.non_resource_urls.is_empty()
                })
            })
            .flatten();
        match existing {
            Some(o) => {
                for v in rule.verbs {
                    if !o.verbs.contains(&v) {
                        o.verbs.push(v);
                    }
                }
            }
            None => out.push(rule),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    fn info(method: &str, path: &str) -> RequestInfo {
        RequestInfo::new(method, path, &HashMap::new())
    }

    fn allows(r: &PolicyRule, method: &str, path: &str) -> bool {
        let i = info(method, path);
        r.allows(&Request::new(&i))
    }

    #[test]
    fn verbs_groups_and_resources_match_exactly_or_by_star() {
        let r = rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(allows(&r, "GET", "/api/v1/namespaces/a/pods"));
        assert!(allows(&r, "GET", "/api/v1/namespaces/a/pods/p"));
        assert!(!allows(&r, "POST", "/api/v1/namespaces/a/pods"));
        assert!(!allows(&r, "GET", "/api/v1/namespaces/a/secrets"));
        assert!(!allows(&r, "GET", "/apis/apps/v1/namespaces/a/deployments"));
        // A subresource needs its own grant.
        assert!(!allows(&r, "GET", "/api/v1/namespaces/a/pods/p/log"));
        let star = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(allows(
            &star,
            "DELETE",
            "/apis/apps/v1/namespaces/a/deployments"
        ));
        assert!(allows(&star, "GET", "/api/v1/namespaces/a/pods/p/log"));
        // Resource rules never grant paths.
        assert!(!allows(&star, "GET", "/healthz"));
    }

    #[test]
    fn watch_list_and_deletecollection_are_their_own_verbs() {
        let r = rule(json!({"verbs": ["watch"], "apiGroups": [""], "resources": ["pods"]}));
        let q = HashMap::from([("watch".to_string(), "true".to_string())]);
        let i = RequestInfo::new("GET", "/api/v1/pods", &q);
        assert!(r.allows(&Request::new(&i)));
        assert!(!allows(&r, "GET", "/api/v1/pods"));
        let d =
            rule(json!({"verbs": ["deletecollection"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(allows(&d, "DELETE", "/api/v1/namespaces/a/pods"));
        assert!(!allows(&d, "DELETE", "/api/v1/namespaces/a/pods/p"));
    }

    #[test]
    fn subresources_match_by_full_name_or_star_prefix() {
        let r = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(allows(&r, "GET", "/api/v1/namespaces/a/pods/p/log"));
        assert!(!allows(&r, "GET", "/api/v1/namespaces/a/pods/p"));
        let any = rule(json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(allows(
            &any,
            "PUT",
            "/apis/apps/v1/namespaces/a/deployments/d/status"
        ));
        assert!(!allows(
            &any,
            "PUT",
            "/apis/apps/v1/namespaces/a/deployments/d"
        ));
        assert!(!allows(
            &any,
            "PUT",
            "/apis/apps/v1/namespaces/a/deployments/d/scale"
        ));
    }

    #[test]
    fn resource_names_limit_to_named_objects() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}),
        );
        assert!(allows(&r, "GET", "/api/v1/namespaces/a/configmaps/one"));
        assert!(!allows(&r, "GET", "/api/v1/namespaces/a/configmaps/two"));
        // A list has no name, unless a field selector pins it.
        assert!(!allows(&r, "GET", "/api/v1/namespaces/a/configmaps"));
        let q = HashMap::from([("fieldSelector".to_string(), "metadata.name=one".to_string())]);
        let i = RequestInfo::new("GET", "/api/v1/namespaces/a/configmaps", &q);
        assert!(r.allows(&Request::new(&i)));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        assert!(allows(&r, "GET", "/healthz"));
        assert!(!allows(&r, "GET", "/healthz/etcd"));
        assert!(allows(&r, "GET", "/apis/apps"));
        assert!(!allows(&r, "GET", "/apis"));
        assert!(!allows(&r, "POST", "/healthz"));
        let all = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(allows(&all, "GET", "/metrics"));
        assert!(!allows(&all, "GET", "/api/v1/pods"));
    }

    #[test]
    fn coverage_finds_what_the_owner_lacks() {
        let owner = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]}),
        )];
        let (ok, _) = covers(
            &owner,
            &[rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/status"]}),
            )],
        );
        assert!(ok);
        let (ok, missing) = covers(
            &owner,
            &[rule(
                json!({"verbs": ["get", "delete", "create"], "apiGroups": [""], "resources": ["pods"]}),
            )],
        );
        assert!(!ok);
        let missing = compact(missing);
        assert_eq!(
            missing[0].compact_string(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "create"]}"#
        );
        // Named grants cover only those names; an unnamed request is not covered.
        let named = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
        )];
        assert!(covers(&named, &[rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}))]).0);
        assert!(
            !covers(
                &named,
                &[rule(
                    json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]})
                )]
            )
            .0
        );
        let star = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert_eq!(
            star.compact_string(),
            r#"{NonResourceURLs:["*"], Verbs:["*"]}"#
        );
        assert!(!covers(&owner, &[star]).0);
    }
}
