//! ValidatingAdmissionPolicy enforcement (admissionregistration.k8s.io/v1): the bindings'
//! policies that match a write run their CEL validations; each failure is denied, warned
//! about or recorded for audit as the binding's `validationActions` say.

pub mod cache;
pub mod compiled;
pub mod evaluate;
pub mod matching;
pub mod params;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin, Verdict};
use crate::audit::notes;
use crate::status::ApiError;
use crate::types::registry::ResourceType;
use evaluate::{Decision, Pair, Request};
use matching::{Labels, RequestShape};

/// Upstream exempts the admission configuration kinds, so a bad policy cannot lock out
/// the means to fix it.
const EXEMPT: [&str; 4] = [
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

#[derive(Default)]
pub struct ValidatingAdmissionPolicy {
    cache: Arc<cache::Cache>,
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// upstream's reasonToCode.
fn code_for(reason: &str) -> StatusCode {
    match reason {
        "Forbidden" => StatusCode::FORBIDDEN,
        "Unauthorized" => StatusCode::UNAUTHORIZED,
        "RequestEntityTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl Plugin for ValidatingAdmissionPolicy {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionPolicy"
    }

    fn handles(&self, _operation: Operation, rt: &ResourceType) -> bool {
        !(rt.group == "admissionregistration.k8s.io" && EXEMPT.contains(&rt.plural.as_str()))
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(self.admit(attrs, obj, old))
    }
}

impl ValidatingAdmissionPolicy {
    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let snapshot = self.cache.get(attrs.state).await;
        if snapshot.pairs.is_empty() {
            return Ok(());
        }
        let rt = &attrs.target.rt;
        let shape = RequestShape {
            operation: operation_name(attrs.operation),
            group: &rt.group,
            version: &rt.version,
            resource: &rt.plural,
            subresource: attrs.target.subresource.as_deref().unwrap_or(""),
            namespaced: rt.namespaced,
            is_namespace: crate::types::registry::is_core_namespaces(rt),
        };
        let name = attrs.name;
        let candidates: Vec<_> = snapshot
            .pairs
            .iter()
            .filter(|(p, b)| {
                p.constraints.selects_resource(&shape, name, false)
                    && b.matches
                        .as_ref()
                        .is_none_or(|m| m.selects_resource(&shape, name, true))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let namespace = attrs.target.namespace.as_deref().filter(|_| rt.namespaced);
        // A delete's object is the stored one (the chain passes none).
        let stored;
        let old = match (attrs.operation, old) {
            (Operation::Delete, _) => {
                stored = crate::storage::read(attrs.state, rt, namespace, name)
                    .await?
                    .map(|(o, _)| o);
                stored.as_ref()
            }
            (_, old) => old,
        };
        let object = (!obj.is_null()).then_some(obj);
        let namespace_object = match namespace {
            Some(ns) => {
                let ns_rt = attrs.state.registry.find("", "v1", "namespaces");
                match ns_rt {
                    Some(ns_rt) => crate::storage::read(attrs.state, &ns_rt, None, ns)
                        .await?
                        .map(|(o, _)| o),
                    None => None,
                }
            }
            None if shape.is_namespace => object.or(old).cloned(),
            None => None,
        };
        let labels = Labels {
            namespace: namespace_object.as_ref().and_then(crate::object::labels),
            object: object.and_then(crate::object::labels),
            old_object: old.and_then(crate::object::labels),
        };
        let mut pairs = Vec::new();
        let mut decisions = Vec::new();
        for (policy, binding) in candidates {
            if !policy.constraints.selects_labels(&shape, &labels)
                || !binding
                    .matches
                    .as_ref()
                    .is_none_or(|m| m.selects_labels(&shape, &labels))
            {
                continue;
            }
            let fail = |message: String| Decision {
                policy: policy.name.clone(),
                binding: binding.name.clone(),
                actions: binding.actions,
                message,
                reason: "Invalid",
                expression_index: None,
            };
            match params::resolve(attrs.state, policy, binding, namespace).await? {
                params::Params::NotUsed => pairs.push(Pair {
                    policy: policy.clone(),
                    binding: binding.clone(),
                    params: Value::Null,
                }),
                params::Params::Found(found) => {
                    pairs.extend(found.into_iter().map(|params| Pair {
                        policy: policy.clone(),
                        binding: binding.clone(),
                        params,
                    }))
                }
                params::Params::Missing { deny: false } => {}
                params::Params::Missing { deny: true } => decisions.push(fail(
                    "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
                )),
                params::Params::Misconfigured(why) if policy.fail_closed => {
                    decisions.push(fail(why))
                }
                params::Params::Misconfigured(why) => {
                    tracing::warn!(policy = %policy.name, binding = %binding.name, %why, "policy ignored")
                }
            }
        }
        if !pairs.is_empty() {
            let user = notes::user();
            let request = json!({
                "uid": uuid::Uuid::new_v4().to_string(),
                "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                "subResource": shape.subresource,
                "requestKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "requestResource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                "name": name,
                "namespace": namespace.unwrap_or(""),
                "operation": shape.operation,
                "userInfo": user.map(|u| u.0.to_json()).unwrap_or_else(|| json!({})),
                "dryRun": attrs.dry_run,
            });
            let req = Request {
                object: obj.clone(),
                old_object: old.cloned().unwrap_or(Value::Null),
                request,
                namespace_object: namespace_object.clone().unwrap_or(Value::Null),
            };
            let fail_closed: Vec<Decision> = pairs
                .iter()
                .filter(|p| p.policy.fail_closed)
                .map(|p| Decision {
                    policy: p.policy.name.clone(),
                    binding: p.binding.name.clone(),
                    actions: p.binding.actions,
                    message: "policy evaluation did not finish in time".into(),
                    reason: "Invalid",
                    expression_index: None,
                })
                .collect();
            match attrs
                .state
                .cel
                .run_with(move || evaluate::run(&req, &pairs))
                .await
            {
                Ok(v) => {
                    decisions.extend(v.decisions);
                    for (k, val) in v.annotations {
                        notes::annotate(k, val);
                    }
                }
                Err(overrun) => {
                    tracing::warn!(?overrun, "admission policies did not finish");
                    decisions.extend(fail_closed);
                }
            }
        }
        self.act(attrs, decisions)
    }

    /// Apply each decision's binding actions: the first Deny refuses the request.
    fn act(&self, attrs: &Attributes<'_>, decisions: Vec<Decision>) -> Result<(), ApiError> {
        let mut audited = Vec::new();
        let mut denied = None;
        for d in decisions {
            if d.actions.warn {
                notes::warn(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                    d.policy, d.binding, d.message
                ));
            }
            if d.actions.audit {
                audited.push(json!({
                    "message": d.message,
                    "policy": d.policy,
                    "binding": d.binding,
                    "expressionIndex": d.expression_index.unwrap_or(0),
                    "validationActions": d.actions.names(),
                }));
            }
            if d.actions.deny && denied.is_none() {
                denied = Some(d);
            }
        }
        if !audited.is_empty() {
            notes::annotate(
                "validation.policy.admission.k8s.io/validation_failure".into(),
                Value::Array(audited).to_string(),
            );
        }
        let Some(d) = denied else {
            return Ok(());
        };
        let message = format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
            d.policy, d.binding, d.message
        );
        let mut e = super::forbidden(attrs, &message);
        e.reason = d.reason;
        e.code = code_for(d.reason);
        if let Some(details) = e.details.as_mut() {
            details["causes"] = json!([{"message": message}]);
        }
        Err(e)
    }
}
