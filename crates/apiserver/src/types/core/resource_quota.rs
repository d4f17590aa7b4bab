//! ResourceQuota (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::registry::ResourceType;
use crate::types::strategy::Strategy;

pub struct ResourceQuota;

/// upstream's standard quota scopes.
const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];
/// Scopes that only say yes or no of a pod (their selector operator must be `Exists`).
const BOOLEAN_SCOPES: &[&str] = &[
    "BestEffort",
    "NotBestEffort",
    "Terminating",
    "NotTerminating",
    "CrossNamespacePodAffinity",
];
const POD_COMPUTE: &[&str] = &[
    "cpu",
    "memory",
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];
/// upstream's standardQuotaResources (names scopes are checked against).
const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// upstream's IsResourceQuotaScopeValidForResource.
fn scope_allows(scope: &str, resource: &str) -> bool {
    match scope {
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => resource == "pods" || POD_COMPUTE.contains(&resource),
        "BestEffort" => resource == "pods",
        "VolumeAttributesClass" => {
            resource == "persistentvolumeclaims" || resource == "requests.storage"
        }
        _ => true,
    }
}

fn is_standard_resource(resource: &str) -> bool {
    STANDARD_RESOURCES.contains(&resource) || resource.starts_with("requests.hugepages-")
}

/// A quota's scopes as selector requirements: `spec.scopes` (each `Exists`) and
/// `spec.scopeSelector.matchExpressions` — (scope, operator, values).
pub(crate) fn scope_requirements(quota: &Value) -> Vec<(String, String, Vec<String>)> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut out: Vec<(String, String, Vec<String>)> = strings(quota.pointer("/spec/scopes"))
        .into_iter()
        .map(|s| (s, "Exists".to_string(), Vec::new()))
        .collect();
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        out.push((
            text("scopeName"),
            text("operator"),
            strings(e.get("values")),
        ));
    }
    out
}

/// A scope selector requirement over the one value a scope reads (upstream puts it in a
/// label set even when empty, so `DoesNotExist` never matches and `Exists` is special-cased
/// to "not empty").
fn requirement_matches(op: &str, values: &[String], value: &str) -> bool {
    match op {
        "Exists" => !value.is_empty(),
        "In" => values.iter().any(|v| v == value),
        "NotIn" => !values.iter().any(|v| v == value),
        _ => false,
    }
}

/// Whether a quota counts `obj` (of type `rt`): every scope must match it (upstream's pod and
/// PVC evaluators; other kinds match no scope, so a scoped quota never counts them).
pub(crate) fn scopes_match(quota: &Value, rt: &ResourceType, obj: &Value) -> bool {
    let requirements = scope_requirements(quota);
    if requirements.is_empty() {
        return true;
    }
    let core = rt.group.is_empty();
    let pod = core && rt.plural == "pods";
    let pvc = core && rt.plural == "persistentvolumeclaims";
    let text = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let terminating = || {
        obj.pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|s| s >= 0)
    };
    let best_effort = || {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match obj.pointer("/status/qosClass").and_then(Value::as_str) {
            Some(q) if !q.is_empty() => q == "BestEffort",
            _ => crate::types::shared::defaulting::qos_class(spec) == "BestEffort",
        }
    };
    requirements
        .iter()
        .all(|(scope, op, values)| match scope.as_str() {
            "Terminating" => pod && terminating(),
            "NotTerminating" => pod && !terminating(),
            "BestEffort" => pod && best_effort(),
            "NotBestEffort" => pod && !best_effort(),
            "PriorityClass" => {
                pod && requirement_matches(op, values, text("/spec/priorityClassName"))
            }
            "CrossNamespacePodAffinity" => pod && cross_namespace_affinity(obj),
            "VolumeAttributesClass" => {
                pvc && requirement_matches(op, values, text("/spec/volumeAttributesClassName"))
            }
            _ => false,
        })
}

/// upstream's usesCrossNamespacePodAffinity: a pod (anti-)affinity term naming namespaces
/// or a namespace selector.
fn cross_namespace_affinity(pod: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|a| {
        let Some(aff) = pod.pointer(&format!("/spec/affinity/{a}")) else {
            return false;
        };
        let required = aff
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = aff
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|t| {
            t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
                || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
    })
}

/// An Invalid cause whose value is printed as upstream's `%#v` of a Go value.
fn invalid_go(field: &str, go_value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {go_value}: {detail}"),
    }
}

/// A JSON list of strings as Go's `%#v` prints a `[]string` (`[]string(nil)` when absent).
fn go_strings(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => "[]string(nil)".to_string(),
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|s| format!("{:?}", s.as_str().unwrap_or("")))
                .collect();
            format!("[]string{{{}}}", items.join(", "))
        }
    }
}

/// `spec.scopeSelector` as upstream's field errors print it (`%#v` of core.ScopeSelector).
fn go_scope_selector(exprs: &[Value]) -> String {
    let reqs: Vec<String> = exprs
        .iter()
        .map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
            format!(
                "core.ScopedResourceSelectorRequirement{{ScopeName:{:?}, Operator:{:?}, Values:{}}}",
                text("scopeName"),
                text("operator"),
                go_strings(e.get("values"))
            )
        })
        .collect();
    format!(
        "core.ScopeSelector{{MatchExpressions:[]core.ScopedResourceSelectorRequirement{{{}}}}}",
        reqs.join(", ")
    )
}

/// upstream's validateResourceQuotaScopes and validateScopedResourceSelectorRequirement.
fn validate_scopes(obj: &Value, causes: &mut Vec<Cause>) {
    let hard: Vec<String> = obj
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    // One cause per hard resource the scope cannot count, as upstream appends them.
    let unsupported_for_hard = |scope: &str| {
        hard.iter()
            .filter(|k| is_standard_resource(k) && !scope_allows(scope, k))
            .count()
    };
    let conflicting = |set: &BTreeSet<String>| {
        [
            ["BestEffort", "NotBestEffort"],
            ["Terminating", "NotTerminating"],
        ]
        .iter()
        .any(|pair| pair.iter().all(|s| set.contains(*s)))
    };
    let scopes: Vec<String> = obj
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect();
    if !scopes.is_empty() {
        let go = format!(
            "[]core.ResourceQuotaScope{{{}}}",
            scopes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut set = BTreeSet::new();
        for s in &scopes {
            if !SCOPES.contains(&s.as_str()) {
                causes.push(invalid_go("spec.scopes", &go, "unsupported scope"));
            }
            for _ in 0..unsupported_for_hard(s) {
                causes.push(invalid_go(
                    "spec.scopes",
                    &go,
                    "unsupported scope applied to resource",
                ));
            }
            set.insert(s.clone());
        }
        if conflicting(&set) {
            causes.push(invalid_go("spec.scopes", &go, "conflicting scopes"));
        }
    }
    let Some(exprs) = obj
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
    else {
        return;
    };
    let path = "spec.scopeSelector.matchExpressions";
    let selector_go = go_scope_selector(exprs);
    let mut set = BTreeSet::new();
    for e in exprs {
        let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let n_values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if !SCOPES.contains(&scope) {
            causes.push(invalid_go(
                &format!("{path}.scopeName"),
                &format!("{scope:?}"),
                "unsupported scope",
            ));
        }
        for _ in 0..unsupported_for_hard(scope) {
            causes.push(invalid_go(
                path,
                &selector_go,
                "unsupported scope applied to resource",
            ));
        }
        if BOOLEAN_SCOPES.contains(&scope) && op != "Exists" {
            causes.push(invalid_go(&format!("{path}.operator"), &format!("{op:?}"), "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"));
        }
        match op {
            "In" | "NotIn" if n_values == 0 => causes.push(Cause::required(
                format!("{path}.values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if n_values > 0 => causes.push(invalid_go(
                &format!("{path}.values"),
                &go_strings(e.get("values")),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => causes.push(invalid_go(
                &format!("{path}.operator"),
                &format!("{op:?}"),
                "not a valid selector operator",
            )),
        }
        set.insert(scope.to_string());
    }
    if conflicting(&set) {
        causes.push(invalid_go(path, &selector_go, "conflicting scopes"));
    }
}

impl Strategy for ResourceQuota {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (k, v) in obj
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            // The decode already refused what is not a quantity.
            let Some(q) = v.as_str().and_then(quantity) else {
                c.invalid(&format!("spec.hard[{k}]"), v, QUANTITY_MSG);
                continue;
            };
            let counted = k.starts_with("count/")
                || [
                    "pods",
                    "services",
                    "replicationcontrollers",
                    "resourcequotas",
                    "secrets",
                    "configmaps",
                    "persistentvolumeclaims",
                    "services.nodeports",
                    "services.loadbalancers",
                ]
                .contains(&k.as_str());
            if q < 0.0 {
                c.invalid(
                    &format!("spec.hard[{k}]"),
                    v,
                    "must be greater than or equal to 0",
                );
            } else if counted && q.fract() != 0.0 {
                c.invalid(&format!("spec.hard[{k}]"), v, "must be an integer");
            }
        }
        validate_scopes(obj, &mut c.0);
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("Request", "string", 0),
            ("Limit", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let hard = |p: &str| -> String {
            o.pointer(p)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let used = o
                                .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                                .and_then(Value::as_str)
                                .unwrap_or("0");
                            format!("{k}: {used}/{}", v.as_str().unwrap_or(""))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        out.extend([age(o), json!(hard("/spec/hard")), json!("")]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(plural: &str) -> ResourceType {
        crate::types::builtin::builtin()
            .into_iter()
            .find(|t| t.group.is_empty() && t.plural == plural)
            .expect("a built-in type")
    }

    fn pods_rt() -> ResourceType {
        builtin("pods")
    }

    #[test]
    fn scopes_pick_the_pods_upstream_counts() {
        let rt = pods_rt();
        let best_effort =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"qosClass": "BestEffort"}});
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}, "status": {"qosClass": "Burstable"}});
        let q = |spec: Value| json!({"spec": spec});
        let be = q(json!({"scopes": ["BestEffort"]}));
        assert!(scopes_match(&be, &rt, &best_effort));
        assert!(!scopes_match(&be, &rt, &burstable));
        let term = q(json!({"scopes": ["Terminating", "NotBestEffort"]}));
        assert!(scopes_match(&term, &rt, &burstable));
        assert!(!scopes_match(&term, &rt, &best_effort));
        let high = q(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high", "top"]}]}}));
        assert!(scopes_match(&high, &rt, &burstable));
        assert!(!scopes_match(&high, &rt, &best_effort));
        let not_high = q(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "NotIn", "values": ["high"]}]}}));
        assert!(
            scopes_match(&not_high, &rt, &best_effort),
            "no class is not in the list"
        );
        let any = q(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "Exists"}]}}));
        assert!(scopes_match(&any, &rt, &burstable) && !scopes_match(&any, &rt, &best_effort));
        // Other kinds match no scope; an unscoped quota counts everything.
        let cms = builtin("configmaps");
        assert!(!scopes_match(&be, &cms, &json!({})));
        assert!(scopes_match(&q(json!({})), &cms, &json!({})));
        let cross = json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "k", "namespaceSelector": {}}}]}}}});
        assert!(cross_namespace_affinity(&cross));
        assert!(!cross_namespace_affinity(&burstable));
    }

    #[test]
    fn selector_values_print_as_upstreams_go_values() {
        let c = ResourceQuota.validate(
            &json!({"spec": {"hard": {"cpu": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "BestEffort", "operator": "Exists", "values": ["x"]}]}}}),
        );
        let messages: Vec<&str> = c.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Invalid value: core.ScopeSelector{MatchExpressions:[]core.ScopedResourceSelectorRequirement{core.ScopedResourceSelectorRequirement{ScopeName:\"BestEffort\", Operator:\"Exists\", Values:[]string{\"x\"}}}}: unsupported scope applied to resource",
                "Invalid value: []string{\"x\"}: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            ]
        );
    }

    #[test]
    fn scopes_are_validated_as_upstream() {
        let causes = |spec: Value| ResourceQuota.validate(&json!({"spec": spec}));
        let c = causes(json!({"hard": {"cpu": "1", "pods": "2"}, "scopes": ["BestEffort"]}));
        assert_eq!(c.len(), 1, "{c:?}");
        // One cause per resource the scope cannot count.
        let two = causes(json!({"hard": {"cpu": "1", "memory": "1Gi"}, "scopes": ["BestEffort"]}));
        assert_eq!(two.len(), 2, "{two:?}");
        assert_eq!(c[0].field, "spec.scopes");
        assert_eq!(
            c[0].message,
            "Invalid value: []core.ResourceQuotaScope{\"BestEffort\"}: unsupported scope applied to resource"
        );
        assert!(causes(json!({"hard": {"pods": "2"}, "scopes": ["BestEffort"]})).is_empty());
        let c = causes(json!({"hard": {"pods": "2"}, "scopes": ["Terminating", "NotTerminating"]}));
        assert!(
            c.iter().any(|c| c.message.ends_with("conflicting scopes")),
            "{c:?}"
        );
        let c = causes(json!({"hard": {"pods": "2"}, "scopes": ["Sometimes"]}));
        assert!(
            c.iter().any(|c| c.message.ends_with("unsupported scope")),
            "{c:?}"
        );
        let c = causes(
            json!({"hard": {"pods": "2"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "BestEffort", "operator": "In", "values": ["x"]},
            {"scopeName": "PriorityClass", "operator": "In"}]}}),
        );
        assert_eq!(
            c[0].message,
            "Invalid value: \"In\": must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"
        );
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.scopeSelector.matchExpressions.operator",
                "spec.scopeSelector.matchExpressions.values"
            ],
            "{c:?}"
        );
    }
}
