//! Pod Security admission: the namespace's `pod-security.kubernetes.io/enforce|audit|warn`
//! labels applied to pods (refused, audited, warned) and to workload templates (audited and
//! warned only), and labelling a namespace warned about the pods already in it.

pub mod checks;
pub mod level;

use serde_json::Value;

use super::{Attributes, Operation, Plugin, Verdict};
use crate::audit::notes;
use crate::status::ApiError;
use crate::types::registry::ResourceType;
use crate::AppState;
use level::{Level, Policy};

pub struct PodSecurity;

/// Where each workload kind keeps its pod template.
fn template_path(rt: &ResourceType) -> Option<&'static str> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "replicationcontrollers") => Some("/spec/template"),
        ("", "podtemplates") => Some("/template"),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            Some("/spec/template")
        }
        ("batch", "jobs") => Some("/spec/template"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn is_pods(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "pods"
}

/// Pod subresources that cannot change what the checks look at (upstream's list).
const IGNORED_POD_SUBRESOURCES: [&str; 8] = [
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        matches!(operation, Operation::Create | Operation::Update)
            && (is_pods(rt)
                || crate::types::registry::is_core_namespaces(rt)
                || template_path(rt).is_some())
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            let rt = &attrs.target.rt;
            let sub = attrs.target.subresource.as_deref().unwrap_or("");
            if crate::types::registry::is_core_namespaces(rt) {
                return if sub.is_empty() {
                    namespace(attrs, obj, old).await
                } else {
                    Ok(())
                };
            }
            if is_pods(rt) {
                if IGNORED_POD_SUBRESOURCES.contains(&sub) {
                    return Ok(());
                }
                if let Some(old) = old {
                    // Label and annotation changes are not re-checked, as upstream.
                    let containers = |p: &Value| {
                        ["containers", "initContainers", "ephemeralContainers"]
                            .map(|k| p.pointer(&format!("/spec/{k}")).cloned())
                    };
                    if containers(obj) == containers(old) {
                        return Ok(());
                    }
                }
                let meta = obj.get("metadata").unwrap_or(&Value::Null);
                let spec = obj.get("spec").unwrap_or(&Value::Null);
                return pod(attrs, meta, spec, true).await;
            }
            let Some(path) = template_path(rt).filter(|_| sub.is_empty()) else {
                return Ok(());
            };
            let Some(template) = obj.pointer(path) else {
                return Ok(());
            };
            let meta = template.get("metadata").unwrap_or(&Value::Null);
            let spec = template.get("spec").unwrap_or(&Value::Null);
            pod(attrs, meta, spec, false).await
        })
    }
}

async fn namespace_policy(state: &AppState, ns: &str) -> Result<Option<Policy>, ApiError> {
    let Some(ns_rt) = state.registry.find("", "v1", "namespaces") else {
        return Ok(None);
    };
    Ok(crate::storage::read(state, &ns_rt, None, ns)
        .await?
        .map(|(n, _)| level::from_labels(crate::object::labels(&n)).0))
}

/// Check one pod (or a workload's template: `enforce` false) against its namespace's policy.
async fn pod(
    attrs: &Attributes<'_>,
    meta: &Value,
    spec: &Value,
    enforce: bool,
) -> Result<(), ApiError> {
    let Some(ns) = attrs.target.namespace.as_deref() else {
        return Ok(());
    };
    let Some(policy) = namespace_policy(attrs.state, ns).await? else {
        return Ok(());
    };
    if policy.fully_privileged() {
        return Ok(());
    }
    let mut refusal = None;
    if enforce {
        notes::annotate(
            "pod-security.kubernetes.io/enforce-policy".into(),
            policy.enforce.to_string(),
        );
        let found = level::evaluate(policy.enforce, meta, spec);
        if !found.is_empty() {
            refusal = Some(super::forbidden(
                attrs,
                &format!(
                    "violates PodSecurity {:?}: {}",
                    policy.enforce.to_string(),
                    level::detail(&found)
                ),
            ));
        }
    }
    let audit = level::evaluate(policy.audit, meta, spec);
    if !audit.is_empty() {
        notes::annotate(
            "pod-security.kubernetes.io/audit-violations".into(),
            format!(
                "would violate PodSecurity {:?}: {}",
                policy.audit.to_string(),
                level::detail(&audit)
            ),
        );
    }
    if let Some(e) = refusal {
        return Err(e);
    }
    let warn = level::evaluate(policy.warn, meta, spec);
    if !warn.is_empty() {
        notes::warn(format!(
            "would violate PodSecurity {:?}: {}",
            policy.warn.to_string(),
            level::detail(&warn)
        ));
    }
    Ok(())
}

/// Labels must parse; a stricter enforce level warns about the pods it would refuse.
async fn namespace(
    attrs: &Attributes<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let (new, causes) = level::from_labels(crate::object::labels(obj));
    let old_parsed = old.map(|o| level::from_labels(crate::object::labels(o)));
    let invalid = !causes.is_empty()
        && old_parsed
            .as_ref()
            .is_none_or(|(_, old_causes)| old_causes.is_empty() || *old_causes != causes);
    if invalid {
        return Err(ApiError::invalid("", "Namespace", attrs.name, causes));
    }
    let Some((old_policy, _)) = old_parsed else {
        return Ok(());
    };
    let (e_new, e_old) = (new.enforce, old_policy.enforce);
    if e_new == e_old
        || e_new.level == Level::Privileged
        || (e_new.minor == e_old.minor && e_new.level <= e_old.level)
    {
        return Ok(());
    }
    for w in existing_pod_warnings(attrs, e_new).await? {
        notes::warn(w);
    }
    Ok(())
}

/// upstream's EvaluatePodsInNamespace: one line per distinct violation, naming a pod and how
/// many others share it.
async fn existing_pod_warnings(
    attrs: &Attributes<'_>,
    enforce: level::LevelVersion,
) -> Result<Vec<String>, ApiError> {
    use bytes::Bytes;
    use capstan_store::{KeyRange, RangeRequest};
    let Some(pods_rt) = attrs.state.registry.find("", "v1", "pods") else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}{}/", pods_rt.key_prefix(), attrs.name);
    let kvs = attrs
        .state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
        .await?
        .kvs;
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for kv in &kvs {
        let Ok(pod) = crate::storage::decode_stored(kv) else {
            continue;
        };
        let meta = pod.get("metadata").unwrap_or(&Value::Null);
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let found = level::evaluate(enforce, meta, spec);
        if found.is_empty() {
            continue;
        }
        let reasons = level::reasons(&found);
        match seen.iter_mut().find(|(r, _, _)| *r == reasons) {
            Some(entry) => entry.2 += 1,
            None => seen.push((reasons, crate::object::name(&pod).to_string(), 1)),
        }
    }
    if seen.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines: Vec<String> = seen
        .into_iter()
        .map(|(reasons, pod, n)| match n {
            1 => format!("{pod}: {reasons}"),
            2 => format!("{pod} (and 1 other pod): {reasons}"),
            n => format!("{pod} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    lines.sort();
    let mut out = vec![format!(
        "existing pods in namespace {:?} violate the new PodSecurity enforce level {:?}",
        attrs.name,
        enforce.to_string()
    )];
    out.extend(lines);
    Ok(out)
}
