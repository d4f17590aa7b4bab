//! The two strategies (upstream `rolling.go`, `recreate.go`): RollingUpdate within
//! maxSurge/maxUnavailable, Recreate (all old pods gone before the new ones start).

use std::time::Duration;

use kube::ResourceExt;

use super::sync::Sync;
use super::util::*;
use super::Error;
use crate::pods;

impl Sync<'_> {
    pub async fn rollout_rolling(&mut self) -> Result<Option<Duration>, Error> {
        self.find_new(true).await?;
        if self.reconcile_new().await? {
            return self.sync_rollout_status().await;
        }
        if self.reconcile_old().await? {
            return self.sync_rollout_status().await;
        }
        if super::progress::complete(&self.d, &self.orig) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Grow (or shrink) the new ReplicaSet within the surge.
    async fn reconcile_new(&mut self) -> Result<bool, Error> {
        let Some(new) = self.new_rs().cloned() else {
            return Ok(false);
        };
        let (have, want) = (rs_replicas(&new), replicas(&self.d));
        if have == want {
            return Ok(false);
        }
        if have > want {
            return self.scale_rs(&new.name_any(), want).await;
        }
        let size = self.new_rs_new_replicas(have);
        self.scale_rs(&new.name_any(), size).await
    }

    /// Shrink old ReplicaSets, unhealthy pods first, never below minimum availability.
    async fn reconcile_old(&mut self) -> Result<bool, Error> {
        let old = active(&self.old_rss());
        if sum_spec(&old) == 0 {
            return Ok(false);
        }
        let all_pods = sum_spec(&self.rss);
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = self.new_rs().map_or(0, |n| rs_replicas(n) - rs_status(n).2);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy replicas of old sets cost no availability: remove them first.
        let mut cleaned = 0;
        for rs in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let r = rs_replicas(rs);
            let unhealthy = r - rs_status(rs).2;
            if r == 0 || unhealthy <= 0 {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(unhealthy);
            self.scale_rs(&rs.name_any(), r - n).await?;
            cleaned += n;
        }
        // Then available ones, down to the minimum.
        let available: i32 = self.rss.iter().map(|r| rs_status(r).2).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in active(&self.old_rss()) {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(&rs);
                let n = r.min(total - scaled);
                self.scale_rs(&rs.name_any(), r - n).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    pub async fn rollout_recreate(&mut self) -> Result<Option<Duration>, Error> {
        self.find_new(false).await?;
        let mut scaled_down = false;
        for rs in active(&self.old_rss()) {
            scaled_down |= self.scale_rs(&rs.name_any(), 0).await?;
        }
        if scaled_down {
            return self.sync_rollout_status().await;
        }
        if self.old_pods_running() {
            // Pods leave without touching a ReplicaSet this loop watches: look again soon.
            let after = self.sync_rollout_status().await?;
            let poll = Duration::from_secs(1);
            return Ok(Some(after.map_or(poll, |a| a.min(poll))));
        }
        if self.new_rs().is_none() {
            self.find_new(true).await?;
        }
        if let Some(new) = self.new_rs().cloned() {
            self.scale_rs(&new.name_any(), replicas(&self.d)).await?;
        }
        if super::progress::complete(&self.d, &self.orig) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Any pod of an old ReplicaSet not yet finished (upstream's oldPodsRunning).
    fn old_pods_running(&self) -> bool {
        let old = self.old_rss();
        if old.iter().map(|r| rs_status(r).0).sum::<i32>() > 0 {
            return true;
        }
        let ns = self.d.namespace().unwrap_or_default();
        old.iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .any(|uid| {
                self.st
                    .ctx
                    .pods()
                    .controlled_by(&ns, uid)
                    .iter()
                    .any(|p| !pods::is_terminal(p))
            })
    }
}
