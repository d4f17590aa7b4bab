//! The Progressing condition and its deadline (upstream `progress.go`): complete,
//! progressing, timed out, paused/resumed, and when to look again.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::sync::Sync;
use super::util::{paused, replicas};
use super::Error;
use crate::conditions;

pub fn deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

pub fn has_deadline(d: &Deployment) -> bool {
    deadline(d).is_some()
}

/// upstream's DeploymentComplete.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// upstream's DeploymentProgressing: more updated, fewer old, more ready or available.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// upstream's DeploymentTimedOut, measured from the condition's last update.
fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let (Some(secs), Some(c)) = (
        deadline(d),
        conditions::get(s.conditions.as_deref().unwrap_or(&[]), "Progressing"),
    ) else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => return false,
        Some("ProgressDeadlineExceeded") => return true,
        _ => {}
    }
    let from = c
        .last_update_time
        .as_ref()
        .or(c.last_transition_time.as_ref())
        .map_or(now.as_second(), |t| t.0.as_second());
    from + i64::from(secs) < now.as_second()
}

impl Sync<'_> {
    /// Paused and resumed show on Progressing (Unknown), unless it already says the
    /// deadline passed (upstream's checkPausedConditions).
    pub fn check_paused_conditions(&mut self) {
        if !has_deadline(&self.d) {
            return;
        }
        let reason = conditions::get(self.conds(), "Progressing")
            .and_then(|c| c.reason.clone())
            .unwrap_or_default();
        if reason == "ProgressDeadlineExceeded" {
            return;
        }
        let shows_paused = reason == "DeploymentPaused";
        if paused(&self.d) && !shows_paused {
            self.set_cond(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
            );
        } else if !paused(&self.d) && shows_paused {
            self.set_cond(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            );
        }
    }

    /// upstream's syncRolloutStatus: status counts, Progressing, ReplicaFailure, and when
    /// to check the deadline again.
    pub async fn sync_rollout_status(&mut self) -> Result<Option<Duration>, Error> {
        let before = self.orig.clone();
        let mut s = self.calculate_status();
        let now = Timestamp::now();
        let what = match self.new_rs() {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", self.d.name_any()),
        };
        let is_complete = complete(&self.d, &s);
        if has_deadline(&self.d) && !paused(&self.d) {
            let is_progressing = progressing(&before, &s);
            let is_timed_out = timed_out(&self.d, &s, now);
            let conds = s.conditions.get_or_insert_with(Vec::new);
            let current = conditions::get(conds.as_slice(), "Progressing").cloned();
            if is_complete {
                let msg = format!("{what} has successfully progressed.");
                conditions::set(conds, "Progressing", "True", "NewReplicaSetAvailable", &msg);
            } else if is_progressing {
                let msg = format!("{what} is progressing.");
                conditions::set(conds, "Progressing", "True", "ReplicaSetUpdated", &msg);
                // Progress moves the deadline's start even when the words are the same.
                if let Some(c) = conds.iter_mut().find(|c| c.type_ == "Progressing") {
                    c.last_update_time = Some(Time(now));
                    if current.as_ref().is_some_and(|c| c.status == "True") {
                        c.last_transition_time = current.and_then(|c| c.last_transition_time);
                    }
                }
            } else if is_timed_out {
                let msg = format!("{what} has timed out progressing.");
                conditions::set(
                    conds,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &msg,
                );
            }
        }
        // A ReplicaSet that cannot make pods says so on the Deployment too.
        let failure = self.all_rss().iter().find_map(|rs| {
            let c = rs
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
            Some((
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ))
        });
        let conds = s.conditions.get_or_insert_with(Vec::new);
        match failure {
            Some((reason, msg)) => {
                conditions::set(conds, "ReplicaFailure", "True", &reason, &msg);
            }
            None => {
                conditions::remove(conds, "ReplicaFailure");
            }
        }
        self.status = s;
        self.write_status().await?;
        // Look again when the deadline would pass (upstream's requeueStuckDeployment).
        if is_complete || paused(&self.d) {
            return Ok(None);
        }
        let (Some(secs), Some(c)) = (
            deadline(&self.d),
            conditions::get(self.conds(), "Progressing"),
        ) else {
            return Ok(None);
        };
        if c.status != "True" {
            return Ok(None);
        }
        let from = c
            .last_update_time
            .as_ref()
            .map_or(now.as_second(), |t| t.0.as_second());
        let left = (from + i64::from(secs) - now.as_second()).max(0) as u64;
        Ok(Some(Duration::from_secs(left + 1)))
    }
}
