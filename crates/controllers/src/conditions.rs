//! Setting a status condition as upstream does: `lastTransitionTime` moves only when the
//! condition's status changes; reason and message are updated in place.

use k8s_openapi::api::apps::v1::{
    DaemonSetCondition, DeploymentCondition, ReplicaSetCondition, StatefulSetCondition,
};
use k8s_openapi::api::batch::v1::JobCondition;
use k8s_openapi::api::core::v1::{NamespaceCondition, ReplicationControllerCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The fields every workload condition type has.
pub trait Condition: Default + Clone {
    fn type_(&self) -> &str;
    fn status(&self) -> &str;
    fn reason(&self) -> Option<&str>;
    fn message(&self) -> Option<&str>;
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str);
    fn set_transition(&mut self, t: Time);
    /// Types that also carry a last-update time (Deployment) or probe time (Job) set it here.
    fn touch(&mut self, _t: &Time) {}
}

macro_rules! condition {
    ($t:ty $(, $touch:ident)?) => {
        impl Condition for $t {
            fn type_(&self) -> &str {
                &self.type_
            }
            fn status(&self) -> &str {
                &self.status
            }
            fn reason(&self) -> Option<&str> {
                self.reason.as_deref()
            }
            fn message(&self) -> Option<&str> {
                self.message.as_deref()
            }
            fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
                self.type_ = type_.to_string();
                self.status = status.to_string();
                self.reason = Some(reason.to_string());
                self.message = Some(message.to_string());
            }
            fn set_transition(&mut self, t: Time) {
                self.last_transition_time = Some(t);
            }
            $(fn touch(&mut self, t: &Time) {
                self.$touch = Some(t.clone());
            })?
        }
    };
}

condition!(DeploymentCondition, last_update_time);
condition!(ReplicaSetCondition);
condition!(ReplicationControllerCondition);
condition!(StatefulSetCondition);
condition!(DaemonSetCondition);
condition!(JobCondition, last_probe_time);
condition!(NamespaceCondition);

/// Find the condition of `type_`.
pub fn get<'a, C: Condition>(conds: &'a [C], type_: &str) -> Option<&'a C> {
    conds.iter().find(|c| c.type_() == type_)
}

/// Set (or add) the condition of `type_`. Returns whether anything changed.
pub fn set<C: Condition>(
    conds: &mut Vec<C>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
    let now = Time(Timestamp::now());
    match conds.iter_mut().find(|c| c.type_() == type_) {
        Some(c) => {
            if c.status() == status && c.reason() == Some(reason) && c.message() == Some(message) {
                return false;
            }
            if c.status() != status {
                c.set_transition(now.clone());
            }
            c.set(type_, status, reason, message);
            c.touch(&now);
            true
        }
        None => {
            let mut c = C::default();
            c.set(type_, status, reason, message);
            c.set_transition(now.clone());
            c.touch(&now);
            conds.push(c);
            true
        }
    }
}

/// Remove the condition of `type_`. Returns whether it was there.
pub fn remove<C: Condition>(conds: &mut Vec<C>, type_: &str) -> bool {
    let before = conds.len();
    conds.retain(|c| c.type_() != type_);
    conds.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut c: Vec<ReplicaSetCondition> = Vec::new();
        assert!(set(
            &mut c,
            "ReplicaFailure",
            "True",
            "FailedCreate",
            "quota"
        ));
        let t0 = c[0].last_transition_time.clone();
        assert!(!set(
            &mut c,
            "ReplicaFailure",
            "True",
            "FailedCreate",
            "quota"
        ));
        assert!(set(
            &mut c,
            "ReplicaFailure",
            "True",
            "FailedCreate",
            "quota 2"
        ));
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].message.as_deref(), Some("quota 2"));
        assert!(remove(&mut c, "ReplicaFailure"));
        assert!(c.is_empty());
    }
}
