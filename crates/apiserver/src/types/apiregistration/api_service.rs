//! APIService (apiregistration.k8s.io/v1): its defaults, validation and table columns as
//! kube-aggregator's strategy has them — everything capstan knows about the kind, in one place.

use base64::Engine;
use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;
use crate::types::validation::NameRule;

pub struct ApiService;

/// The condition every APIService reports (kube-aggregator's `Available`).
pub const AVAILABLE: &str = "Available";

impl Strategy for ApiService {
    /// Only a path segment here: `validate` then requires exactly `version.group` (the core
    /// group's is `v1.`, which no DNS rule would accept).
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn defaults(&self, obj: &mut Value, _creating: bool) {
        if let Some(service) = obj
            .pointer_mut("/spec/service")
            .and_then(Value::as_object_mut)
        {
            service.entry("port").or_insert(json!(443));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        let group = s(obj, "/spec/group");
        let version = s(obj, "/spec/version");
        let name = s(obj, "/metadata/name");
        let required_name = format!("{version}.{group}");
        if !name.is_empty() && name != required_name {
            c.invalid(
                "metadata.name",
                &json!(name),
                &format!("must be `spec.version+\".\"+spec.group`: {required_name:?}"),
            );
        }
        if group.is_empty() && version != "v1" {
            c.required(
                "spec.group",
                "only v1 may have an empty group and it better be legacy kube",
            );
        }
        if !group.is_empty() && !is_dns1123_subdomain(group) {
            c.invalid(
                "spec.group",
                &json!(group),
                crate::types::validation::DNS1123_SUBDOMAIN_MSG,
            );
        }
        if !(is_dns1123_label(version) && version.as_bytes()[0].is_ascii_lowercase()) {
            c.invalid("spec.version", &json!(version), DNS1035_MSG);
        }
        let number = |ptr: &str| obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0);
        let group_priority = number("/spec/groupPriorityMinimum");
        if !(1..=20000).contains(&group_priority) {
            c.invalid(
                "spec.groupPriorityMinimum",
                &json!(group_priority),
                "must be positive and less than 20000",
            );
        }
        let version_priority = number("/spec/versionPriority");
        if !(1..=1000).contains(&version_priority) {
            c.invalid(
                "spec.versionPriority",
                &json!(version_priority),
                "must be positive and less than 1000",
            );
        }
        let ca_bundle = s(obj, "/spec/caBundle");
        let insecure = obj
            .pointer("/spec/insecureSkipTLSVerify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match obj.pointer("/spec/service").filter(|v| !v.is_null()) {
            None => {
                if !ca_bundle.is_empty() {
                    // Upstream names the decoded size, not the bytes.
                    let size = base64::engine::general_purpose::STANDARD
                        .decode(ca_bundle)
                        .map(|b| b.len())
                        .unwrap_or(ca_bundle.len());
                    c.invalid(
                        "spec.caBundle",
                        &json!(format!("{size} bytes")),
                        "local APIServices may not have a caBundle",
                    );
                }
                if insecure {
                    c.invalid(
                        "spec.insecureSkipTLSVerify",
                        &json!(true),
                        "local APIServices may not have insecureSkipTLSVerify",
                    );
                }
            }
            Some(service) => {
                if s(service, "/namespace").is_empty() {
                    c.required("spec.service.namespace", "");
                }
                if s(service, "/name").is_empty() {
                    c.required("spec.service.name", "");
                }
                if let Some(port) = service.get("port").and_then(Value::as_i64) {
                    if !(1..=65535).contains(&port) {
                        c.invalid(
                            "spec.service.port",
                            &json!(port),
                            "must be between 1 and 65535, inclusive",
                        );
                    }
                }
                if insecure && !ca_bundle.is_empty() {
                    c.invalid(
                        "spec.insecureSkipTLSVerify",
                        &json!(true),
                        "may not be true if caBundle is present",
                    );
                }
            }
        }
        for (i, cond) in arr(obj, "/status/conditions").iter().enumerate() {
            c.one_of(
                cond,
                "/status",
                &format!("status.conditions[{i}].status"),
                &["True", "False", "Unknown"],
                false,
            );
        }
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        Some(vec![
            col("Name", "string", 0),
            col("Service", "string", 0),
            col("Available", "string", 0),
            col("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let service = match o.pointer("/spec/service").filter(|v| !v.is_null()) {
            Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
            None => "Local".to_string(),
        };
        Some(vec![
            json!(object::name(o)),
            json!(service),
            json!(available_cell(o)),
            age(o),
        ])
    }
}

/// `True`, or `False (Reason)` / `Unknown` as kube-aggregator prints it.
fn available_cell(o: &Value) -> String {
    let cond = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == AVAILABLE));
    let Some(cond) = cond else {
        return "Unknown".into();
    };
    let status = cond["status"].as_str().unwrap_or("Unknown");
    match cond["reason"].as_str() {
        Some(reason) if status != "True" && !reason.is_empty() => format!("{status} ({reason})"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: Value) -> Vec<String> {
        ApiService
            .validate(&obj)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_local_core_apiservice_is_valid() {
        let obj = json!({"metadata": {"name": "v1."},
            "spec": {"group": "", "version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}});
        assert_eq!(causes(obj), Vec::<String>::new());
    }

    #[test]
    fn name_priorities_and_local_tls_settings_are_checked() {
        let obj = json!({"metadata": {"name": "v1.wrong"},
            "spec": {"group": "example.com", "version": "v1", "groupPriorityMinimum": 0,
                     "versionPriority": 1001, "caBundle": "AAAA", "insecureSkipTLSVerify": true}});
        let got = causes(obj);
        assert!(got.contains(&"metadata.name: Invalid value: \"v1.wrong\": must be `spec.version+\".\"+spec.group`: \"v1.example.com\"".to_string()), "{got:?}");
        assert!(
            got.iter()
                .any(|c| c.starts_with("spec.groupPriorityMinimum: Invalid value: 0:")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|c| c.starts_with("spec.versionPriority: Invalid value: 1001:")),
            "{got:?}"
        );
        assert!(got.contains(&"spec.caBundle: Invalid value: \"3 bytes\": local APIServices may not have a caBundle".to_string()), "{got:?}");
        assert!(
            got.iter()
                .any(|c| c.starts_with("spec.insecureSkipTLSVerify:")),
            "{got:?}"
        );
    }

    #[test]
    fn a_service_reference_needs_a_name_and_namespace_and_gets_port_443() {
        let mut obj = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "service": {}}});
        ApiService.defaults(&mut obj, true);
        assert_eq!(obj.pointer("/spec/service/port"), Some(&json!(443)));
        let got = causes(obj);
        assert!(
            got.contains(&"spec.service.namespace: Required value".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(&"spec.service.name: Required value".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn the_available_column_shows_the_reason_when_not_true() {
        let o = json!({"status": {"conditions": [{"type": "Available", "status": "False", "reason": "ServiceNotFound"}]}});
        assert_eq!(available_cell(&o), "False (ServiceNotFound)");
        let o = json!({"status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}});
        assert_eq!(available_cell(&o), "True");
        assert_eq!(available_cell(&json!({})), "Unknown");
    }
}
