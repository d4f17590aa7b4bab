//! The strategy of a kind: everything the generic REST path asks of a type — defaults,
//! what create and update reset, validation, deletion, printing, field selectors.

use serde_json::Value;

use crate::status::Cause;
use crate::types::validation::NameRule;

/// What a DELETE does before the generic path (finalizers, removal) runs.
#[derive(Debug, PartialEq)]
pub enum GracefulDelete {
    /// Not graceful: the generic path deletes the object, or marks it for its finalizers.
    Proceed,
    /// Already marked with at least this much grace: answered with the object as it is.
    Pending,
    /// Store this marked object (first mark, or a shorter grace period than before).
    Mark(Box<Value>),
}

/// One kind's rules (upstream's registry strategy, `pkg/registry/<group>/<kind>`). The
/// registry entry of every served type holds one; built-in kinds have a module each under
/// `types/<group>/`, custom resources a [`crate::types::custom::CustomResource`] built from
/// their CRD's schema. Every method has the behaviour of a kind with nothing special.
pub trait Strategy: Send + Sync {
    /// What `metadata.name` must be.
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }

    /// What the server sets or clears on a new object before defaults (PrepareForCreate):
    /// by default a type with a status subresource starts without status.
    fn prepare_for_create(&self, obj: &mut Value, has_status: bool) {
        if has_status {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }

    /// What an update through `subresource` keeps from the stored object
    /// (PrepareForUpdate): `/status` writes only status, the main endpoint of a type with
    /// a status subresource keeps the stored status.
    fn prepare_for_update(
        &self,
        new: &mut Value,
        old: &Value,
        subresource: Option<&str>,
        has_status: bool,
    ) {
        keep_status(new, old, subresource, has_status);
    }

    /// Upstream's defaulting, on create (`creating`) and on every update.
    fn defaults(&self, _obj: &mut Value, _creating: bool) {}

    /// The kind's own rules on create and update (metadata is checked generically).
    fn validate(&self, _obj: &Value) -> Vec<Cause> {
        Vec::new()
    }

    /// What may not change on update, beyond what every type checks.
    fn validate_update(&self, _old: &Value, _new: &Value) -> Vec<Cause> {
        Vec::new()
    }

    /// Whether a delete only marks the object (deletionTimestamp) even without
    /// finalizers, for a loop to finish (namespaces, CRDs).
    fn deletion_is_two_phase(&self) -> bool {
        false
    }

    /// Whether an update leaving a marked object without metadata finalizers removes it
    /// (namespaces also wait for their `spec.finalizers`, as upstream's
    /// ShouldDeleteNamespaceDuringUpdate).
    fn goes_when_finalized(&self, _new: &Value) -> bool {
        true
    }

    /// What a delete that marks the object sets on it.
    fn prepare_for_delete(&self, _marked: &mut Value) {}

    /// Whether a delete that names no propagation policy orphans the object's dependents
    /// (upstream's DefaultGarbageCollectionPolicy `OrphanDependents`, kept by core/v1
    /// ReplicationControllers and batch/v1 Jobs for backward compatibility); else the
    /// garbage collector deletes them in the background.
    fn orphans_dependents_by_default(&self) -> bool {
        false
    }

    /// Graceful deletion (upstream's CheckGracefulDelete and BeforeDelete) for a request's
    /// `gracePeriodSeconds`: whether the object is only marked, for its runner to remove.
    fn graceful_delete(
        &self,
        _obj: &Value,
        _grace_period_seconds: Option<i64>,
        _now: chrono::DateTime<chrono::Utc>,
    ) -> GracefulDelete {
        GracefulDelete::Proceed
    }

    /// Subresources the API server serves for this kind beyond `status` and `scale`.
    fn own_subresources(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the kind is only ever created and answered, never stored (upstream's review
    /// kinds: TokenReview, SelfSubjectReview): its one verb is `create`.
    fn not_stored(&self) -> bool {
        false
    }

    /// Whether writing an object of this kind changes which types are served (CRDs).
    fn changes_served_types(&self) -> bool {
        false
    }

    /// Table columns (NAME included); `None` prints NAME and AGE.
    fn columns(&self) -> Option<Vec<Value>> {
        None
    }

    /// One object's cells, matching `columns`.
    fn cells(&self, _obj: &Value) -> Option<Vec<Value>> {
        None
    }

    /// Fields the kind can be selected by, beyond metadata.name and metadata.namespace.
    fn field_selectors(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A kind with nothing special (the trait's defaults).
pub struct Plain;

impl Strategy for Plain {}

/// What an update through `subresource` keeps from the stored object, for every kind: a
/// `/status` write changes only status; the main endpoint of a kind with a status keeps the
/// stored status.
pub fn keep_status(new: &mut Value, old: &Value, subresource: Option<&str>, has_status: bool) {
    if subresource == Some("status") {
        let status = new.get("status").cloned();
        reset_to_stored(new, old);
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
}

/// A subresource write that changes one part: `new` becomes the stored object again, except
/// for its ownership (apply computes managedFields before this step); the caller then puts
/// back the part the subresource changes.
pub fn reset_to_stored(new: &mut Value, old: &Value) {
    let managed = new.pointer("/metadata/managedFields").cloned();
    *new = old.clone();
    if let Some(m) = managed {
        crate::object::set_meta(new, "managedFields", m);
    }
}
