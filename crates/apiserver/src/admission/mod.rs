//! Admission: the ordered plugins every write passes after the kind's strategy has
//! defaulted it — mutating plugins first, then (after validation) validating plugins —
//! each declaring the operations and resources it handles. Dry-run runs the same chain.

pub mod certificates;
pub mod default_storage_class;
pub mod default_tolerations;
pub mod limit_ranger;
pub mod namespace_lifecycle;
pub mod node_restriction;
pub mod pod_security;
pub mod policy;
pub mod priority;
pub mod resource_quota;
pub mod service_account;
pub mod service_alloc;

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::status::{ApiError, Cause};
use crate::types::registry::ResourceType;
use crate::types::Target;
use crate::AppState;

/// What a write does (upstream's admission.Operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// The request a plugin sees (upstream's admission.Attributes).
pub struct Attributes<'a> {
    pub state: &'a AppState,
    pub operation: Operation,
    pub target: &'a Target,
    pub name: &'a str,
    pub dry_run: bool,
}

/// Whether a request creates a core Pod (what the pod admission plugins handle).
pub fn creates_pod(operation: Operation, rt: &ResourceType) -> bool {
    operation == Operation::Create && rt.group.is_empty() && rt.plural == "pods"
}

/// upstream's `admission.NewForbidden`: `pods "x" is forbidden: <why>` (403), the request's
/// resource and name in the details.
pub fn forbidden(attrs: &Attributes<'_>, why: &str) -> ApiError {
    let rt = &attrs.target.rt;
    let qualified = if rt.group.is_empty() {
        rt.plural.to_string()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    let message = if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", attrs.name)
    };
    let mut details = serde_json::json!({"name": attrs.name, "kind": rt.plural});
    if !rt.group.is_empty() {
        details["group"] = serde_json::json!(rt.group);
    }
    ApiError::forbidden(message).with_details(details)
}

/// A future a plugin returns.
pub type Verdict<'a> = BoxFuture<'a, Result<(), ApiError>>;

fn allow<'a>() -> Verdict<'a> {
    Box::pin(async { Ok(()) })
}

/// One admission plugin. Every method has the behaviour of a plugin with nothing to say.
pub trait Plugin: Send + Sync {
    /// Its name as upstream's `--enable-admission-plugins` spells it.
    fn name(&self) -> &'static str;

    /// Whether it looks at this operation on this resource at all.
    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool;

    /// The mutating phase: may change the object (`old` on update).
    fn mutate<'a>(
        &'a self,
        _attrs: &'a Attributes<'a>,
        _obj: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        allow()
    }

    /// The validating phase: after the kind's own validation, before storage. On delete
    /// `obj` is null (the request names the object: `attrs.name`).
    fn validate<'a>(
        &'a self,
        _attrs: &'a Attributes<'a>,
        _obj: &'a Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        allow()
    }

    /// Store keys the object holds exclusively (an address, a port): claimed in the
    /// transaction that writes the object, released in the one that deletes it.
    fn claims(&self, _obj: &Value) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// Where this plugin's claims live (read to learn what is taken after a clash).
    fn claim_prefixes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Fill in what a new object claims, avoiding `taken`; returns the keys chosen here
    /// (rather than asked for), which are picked again after a clash.
    fn allocate(
        &self,
        _state: &AppState,
        _obj: &mut Value,
        _taken: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ApiError> {
        Ok(BTreeSet::new())
    }

    /// Why a key the user asked for cannot be had (another object holds it).
    fn clash_cause(&self, _obj: &Value, key: &str) -> Cause {
        Cause::invalid("", key, "is already allocated")
    }
}

/// The plugins in order. Upstream's order, for the plugins capstan has.
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            plugins: vec![
                Box::new(namespace_lifecycle::NamespaceLifecycle),
                Box::new(limit_ranger::LimitRanger),
                Box::new(service_account::ServiceAccount),
                Box::new(node_restriction::NodeRestriction),
                Box::new(default_tolerations::DefaultTolerationSeconds),
                Box::new(priority::Priority),
                Box::new(default_storage_class::DefaultStorageClass),
                Box::new(service_alloc::ServiceAllocation),
                Box::new(pod_security::PodSecurity),
                Box::new(certificates::requester::CertificateRequester),
                Box::new(certificates::approval::CertificateApproval),
                Box::new(certificates::signing::CertificateSigning),
                Box::new(certificates::subject_restriction::CertificateSubjectRestriction),
                Box::new(policy::ValidatingAdmissionPolicy::default()),
                // Last, as upstream: it charges the quota for what the others let through.
                Box::new(resource_quota::ResourceQuota),
            ],
        }
    }
}

impl Chain {
    fn handling<'c>(
        &'c self,
        operation: Operation,
        rt: &'c ResourceType,
    ) -> impl Iterator<Item = &'c dyn Plugin> + 'c {
        self.plugins
            .iter()
            .map(Box::as_ref)
            .filter(move |p| p.handles(operation, rt))
    }

    /// The names of the plugins, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Run every mutating plugin that handles the request, in order.
    pub async fn mutate(
        &self,
        attrs: &Attributes<'_>,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        for p in self.handling(attrs.operation, &attrs.target.rt) {
            p.mutate(attrs, obj, old).await?;
        }
        Ok(())
    }

    /// Run every validating plugin that handles the request, in order.
    pub async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        for p in self.handling(attrs.operation, &attrs.target.rt) {
            p.validate(attrs, obj, old).await?;
        }
        Ok(())
    }

    /// The plugins that claim store keys for objects of this type.
    pub fn claimers<'c>(&'c self, rt: &'c ResourceType) -> Vec<&'c dyn Plugin> {
        self.plugins
            .iter()
            .map(Box::as_ref)
            .filter(|p| p.handles(Operation::Create, rt) && !p.claim_prefixes().is_empty())
            .collect()
    }

    /// Every key the object claims.
    pub fn claims(&self, rt: &ResourceType, obj: &Value) -> BTreeSet<String> {
        self.claimers(rt)
            .into_iter()
            .flat_map(|p| p.claims(obj))
            .collect()
    }
}
