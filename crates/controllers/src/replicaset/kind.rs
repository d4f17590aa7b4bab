//! What the ReplicaSet loop needs of the two kinds it serves — apps/v1 ReplicaSet and the
//! core/v1 ReplicationController (same loop, a map selector instead of a LabelSelector).

use std::fmt::Debug;

use capstan_scheduler::selectors::{selector_matches, Labels};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerStatus,
};
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::conditions;

/// The counters the loop computes from the pods it owns (upstream's calculateStatus).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: i64,
}

/// The `ReplicaFailure` condition to show (reason, message), or none.
pub type Failure = Option<(String, String)>;

pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The Event source (upstream's component names).
    const COMPONENT: &'static str;
    /// Whether the selector picks a pod with `labels`.
    fn selects(&self, labels: &Labels) -> bool;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The `status` to write if it differs from the stored one (counts and the
    /// `ReplicaFailure` condition, with upstream's transition times), else None.
    fn status_update(&self, counts: &Counts, failure: &Failure) -> Option<Value>;
}

macro_rules! status_update {
    ($self:ident, $status:ident, $counts:ident, $failure:ident) => {{
        let old: $status = $self.status.clone().unwrap_or_default();
        let mut conds = old.conditions.clone().unwrap_or_default();
        match $failure {
            Some((reason, message)) => {
                conditions::set(&mut conds, "ReplicaFailure", "True", reason, message);
            }
            None => {
                conditions::remove(&mut conds, "ReplicaFailure");
            }
        }
        // Zero counters are left out, as upstream's omitempty writes them.
        let nz = |n: i32| (n != 0).then_some(n);
        #[allow(clippy::needless_update)]
        let new = $status {
            replicas: $counts.replicas,
            fully_labeled_replicas: nz($counts.fully_labeled),
            ready_replicas: nz($counts.ready),
            available_replicas: nz($counts.available),
            observed_generation: Some($counts.observed_generation),
            conditions: (!conds.is_empty()).then_some(conds),
            ..Default::default()
        };
        if new == old {
            return None;
        }
        let mut v = serde_json::to_value(&new).unwrap_or(Value::Null);
        // A merge patch must say which fields went away.
        if let Some(o) = v.as_object_mut() {
            for f in [
                "fullyLabeledReplicas",
                "readyReplicas",
                "availableReplicas",
                "conditions",
            ] {
                o.entry(f).or_insert(Value::Null);
            }
        }
        Some(v)
    }};
}

impl ReplicaKind for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn selects(&self, labels: &Labels) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| selector_matches(&s.selector, labels))
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_update(&self, counts: &Counts, failure: &Failure) -> Option<Value> {
        status_update!(self, ReplicaSetStatus, counts, failure)
    }
}

impl ReplicaKind for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn selects(&self, labels: &Labels) -> bool {
        // Defaulted from the template's labels by the API server; an empty map would match
        // everything, as upstream's `labels.Set.AsSelector`.
        self.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_update(&self, counts: &Counts, failure: &Failure) -> Option<Value> {
        status_update!(self, ReplicationControllerStatus, counts, failure)
    }
}
