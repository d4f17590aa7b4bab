//! One sync of one Deployment: its claimed ReplicaSets, finding or creating the new one
//! (revision, annotations, collisions), scaling one with its annotations and Event,
//! proportional scaling, and revision-history cleanup (upstream `sync.go`).

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_scheduler::selectors::{labels_of, selector_matches};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::util::{self, *};
use super::{Error, Loop};
use crate::events::EventType;
use crate::{hash, owners, pods};

pub struct Sync<'a> {
    pub d: Deployment,
    pub st: &'a Loop,
    pub key: String,
    pub rs_api: Api<ReplicaSet>,
    pub d_api: Api<Deployment>,
    /// The ReplicaSets this Deployment controls, kept current as this sync changes them.
    pub rss: Vec<ReplicaSet>,
    pub new_name: Option<String>,
    /// The status as stored, to write only a change.
    pub orig: DeploymentStatus,
    pub status: DeploymentStatus,
}

impl<'a> Sync<'a> {
    pub async fn load(d: &Deployment, st: &'a Loop) -> Result<Sync<'a>, Error> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let candidates: Vec<std::sync::Arc<ReplicaSet>> = st
            .rss
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(&ns))
            .filter(|r| match owners::controller_of(&r.metadata) {
                Some(o) => o.uid == uid,
                None => selector_matches(&selector, labels_of(&r.metadata)),
            })
            .collect();
        let rs_api: Api<ReplicaSet> = Api::namespaced(st.client.clone(), &ns);
        let rss = owners::claim(
            &rs_api,
            &owners::controller_ref(d),
            d.metadata.deletion_timestamp.is_some(),
            candidates,
            |r| selector_matches(&selector, labels_of(&r.metadata)),
        )
        .await
        .into_iter()
        .map(std::sync::Arc::unwrap_or_clone)
        .collect();
        let status = d.status.clone().unwrap_or_default();
        Ok(Sync {
            d: d.clone(),
            st,
            key: pods::key(&d.metadata),
            rs_api,
            d_api: Api::namespaced(st.client.clone(), &ns),
            rss,
            new_name: None,
            orig: status.clone(),
            status,
        })
    }

    fn api_err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| Error::Api {
            key: self.key.clone(),
            what,
            source,
        }
    }

    pub fn new_rs(&self) -> Option<&ReplicaSet> {
        let n = self.new_name.as_deref()?;
        self.rss
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
    }

    pub fn old_rss(&self) -> Vec<ReplicaSet> {
        let mut v: Vec<ReplicaSet> = self
            .rss
            .iter()
            .filter(|r| r.metadata.name != self.new_name)
            .cloned()
            .collect();
        sort_oldest_first(&mut v);
        v
    }

    pub fn all_rss(&self) -> Vec<ReplicaSet> {
        self.rss.clone()
    }

    fn put(&mut self, rs: ReplicaSet) {
        match self
            .rss
            .iter_mut()
            .find(|r| r.metadata.name == rs.metadata.name)
        {
            Some(slot) => *slot = rs,
            None => self.rss.push(rs),
        }
    }

    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// upstream's getAllReplicaSetsAndSyncRevision: find the ReplicaSet whose template is
    /// the Deployment's (oldest first), bring its revision up to date, and create it when
    /// asked and missing.
    pub async fn find_new(&mut self, create: bool) -> Result<(), Error> {
        sort_oldest_first(&mut self.rss);
        let tpl = self.template();
        self.new_name = self
            .rss
            .iter()
            .find(|r| rs_template(r).is_some_and(|t| same_template(t, &tpl)))
            .and_then(|r| r.metadata.name.clone());
        let max_old = self.old_rss().iter().map(revision_of).max().unwrap_or(0);
        let revision = max_old + 1;
        if let Some(rs) = self.new_rs().cloned() {
            let mut ann: BTreeMap<String, String> = copied_annotations(&self.d, &rs);
            let old_rev = revision_of(&rs);
            if old_rev < revision {
                ann.insert(REVISION.into(), revision.to_string());
                if old_rev > 0 {
                    let history = rs
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REVISION_HISTORY))
                        .filter(|h| !h.is_empty())
                        .map_or(old_rev.to_string(), |h| format!("{h},{old_rev}"));
                    ann.insert(REVISION_HISTORY.into(), history);
                }
            }
            if !ann.is_empty() {
                let patched = self
                    .rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"annotations": ann}})),
                    )
                    .await
                    .map_err(self.api_err("updating the new replica set's annotations"))?;
                self.put(patched);
            }
            let rev = revision_of(self.new_rs().unwrap_or(&rs)).max(old_rev);
            self.set_revision(rev).await?;
            if super::progress::has_deadline(&self.d)
                && crate::conditions::get(self.conds(), "Progressing").is_none()
            {
                let msg = format!("Found new replica set {:?}", rs.name_any());
                self.set_cond("Progressing", "True", "FoundNewReplicaSet", &msg);
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        self.create_new(revision).await
    }

    async fn create_new(&mut self, revision: i64) -> Result<(), Error> {
        let collisions = self.status.collision_count;
        let tpl = self.template();
        let h = hash::template_hash(&serde_json::to_value(&tpl).unwrap_or_default(), collisions);
        let mut new_tpl = tpl.clone();
        new_tpl
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), h.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), h.clone());
        let name = format!("{}-{}", self.d.name_any(), h);
        let dr = replicas(&self.d);
        let new_replicas = self.new_rs_new_replicas(0);
        let mut ann = copied_annotations(&self.d, &ReplicaSet::default());
        ann.insert(REVISION.into(), revision.to_string());
        ann.insert(DESIRED_REPLICAS.into(), dr.to_string());
        ann.insert(MAX_REPLICAS.into(), (dr + max_surge(&self.d)).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: new_tpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(ann),
                owner_references: Some(vec![owners::controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(new_replicas),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(new_tpl),
            }),
            status: None,
        };
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                tracing::info!(key = %self.key, rs = %name, replicas = new_replicas, "created new replica set");
                if new_replicas > 0 {
                    let msg = format!("Scaled up replica set {name} from 0 to {new_replicas}");
                    self.event("ScalingReplicaSet", &msg).await;
                }
                if super::progress::has_deadline(&self.d) {
                    let msg = format!("Created new replica set {name:?}");
                    self.set_cond("Progressing", "True", "NewReplicaSetCreated", &msg);
                }
                self.put(created);
                self.new_name = Some(name);
                self.set_revision(revision).await
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .rs_api
                    .get(&name)
                    .await
                    .map_err(self.api_err("reading an existing replica set"))?;
                let ours = owners::is_controlled_by(
                    &existing.metadata,
                    self.d.metadata.uid.as_deref().unwrap_or(""),
                );
                if ours && rs_template(&existing).is_some_and(|t| same_template(t, &tpl)) {
                    // Ours, not yet in the informer: use it.
                    self.put(existing);
                    self.new_name = Some(name);
                    return Ok(());
                }
                let count = collisions.unwrap_or(0) + 1;
                self.status.collision_count = Some(count);
                self.write_status().await?;
                Err(Error::Collision {
                    key: self.key.clone(),
                    name,
                    count,
                })
            }
            Err(e) => Err(self.api_err("creating the new replica set")(e)),
        }
    }

    /// The Deployment's own `revision` annotation follows its new ReplicaSet's.
    async fn set_revision(&mut self, revision: i64) -> Result<(), Error> {
        let have = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if have.as_deref() == Some(&revision.to_string()) {
            return Ok(());
        }
        let patched = self
            .d_api
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {REVISION: revision.to_string()}}}),
                ),
            )
            .await
            .map_err(self.api_err("setting the deployment's revision"))?;
        self.d.metadata = patched.metadata;
        Ok(())
    }

    /// upstream's NewRSNewReplicas: how large the new ReplicaSet may be now.
    pub fn new_rs_new_replicas(&self, current_new: i32) -> i32 {
        let dr = replicas(&self.d);
        if is_recreate(&self.d) {
            return dr;
        }
        let current = sum_spec(&self.rss);
        let max_total = dr + max_surge(&self.d);
        if current >= max_total {
            return current_new;
        }
        current_new + (max_total - current).min(dr - current_new).max(0)
    }

    /// Set one ReplicaSet's size and its desired/max annotations (upstream's
    /// scaleReplicaSet); an Event when the size changes. Returns whether it changed size.
    pub async fn scale_rs(&mut self, name: &str, size: i32) -> Result<bool, Error> {
        let Some(rs) = self.rss.iter().find(|r| r.name_any() == name).cloned() else {
            return Ok(false);
        };
        let dr = replicas(&self.d);
        let max = dr + max_surge(&self.d);
        let from = rs_replicas(&rs);
        let annotated = annotation_i32(&rs, DESIRED_REPLICAS) == Some(dr)
            && annotation_i32(&rs, MAX_REPLICAS) == Some(max);
        if from == size && annotated {
            return Ok(false);
        }
        let patched = self
            .rs_api
            .patch(
                name,
                &PatchParams::default(),
                // The resourceVersion makes the write conditional, as upstream's Update: a
                // size computed from a stale copy is refused (409) and recomputed, so the
                // surge bound holds for the pods that really exist.
                &Patch::Merge(json!({
                    "metadata": {
                        "resourceVersion": rs.metadata.resource_version,
                        "annotations": {
                            DESIRED_REPLICAS: dr.to_string(), MAX_REPLICAS: max.to_string()}},
                    "spec": {"replicas": size},
                })),
            )
            .await
            .map_err(self.api_err("scaling a replica set"))?;
        self.put(patched);
        if from != size {
            let dir = if size > from { "up" } else { "down" };
            let msg = format!("Scaled {dir} replica set {name} from {from} to {size}");
            self.event("ScalingReplicaSet", &msg).await;
        }
        Ok(from != size)
    }

    pub async fn event(&self, reason: &str, msg: &str) {
        self.st
            .recorder
            .record(&self.d, EventType::Normal, reason, msg)
            .await;
    }

    /// upstream's isScalingEvent: an active ReplicaSet's desired-replicas annotation
    /// disagrees with the Deployment's replicas.
    pub fn is_scaling_event(&self) -> bool {
        let dr = replicas(&self.d);
        self.rss
            .iter()
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| annotation_i32(r, DESIRED_REPLICAS).is_some_and(|a| a != dr))
    }

    /// upstream's sync(): scale only (paused, or the replicas changed), then status.
    pub async fn sync_scale(&mut self) -> Result<Option<Duration>, Error> {
        self.find_new(false).await?;
        self.scale().await?;
        if paused(&self.d) {
            self.cleanup().await?;
        }
        self.status = self.calculate_status();
        self.write_status().await?;
        Ok(None)
    }

    pub async fn sync_status_only(&mut self) -> Result<Option<Duration>, Error> {
        self.find_new(false).await?;
        self.status = self.calculate_status();
        self.write_status().await?;
        Ok(None)
    }

    /// upstream's scale(): one active ReplicaSet takes the whole change; a saturated new
    /// one means the old go to zero; otherwise the change is shared in proportion.
    pub async fn scale(&mut self) -> Result<(), Error> {
        let dr = replicas(&self.d);
        let new = self.new_rs().cloned();
        let mut newest_first = self.old_rss();
        newest_first.reverse();
        let mut all = newest_first.clone();
        all.extend(new.clone());
        let all_active = active(&all);
        let only = match all_active.len() {
            0 => new.clone().or_else(|| newest_first.first().cloned()),
            1 => all_active.first().cloned(),
            _ => None,
        };
        if let Some(rs) = only {
            self.scale_rs(&rs.name_any(), dr).await?;
            return Ok(());
        }
        if let Some(n) = &new {
            if rs_replicas(n) == dr
                && annotation_i32(n, DESIRED_REPLICAS) == Some(dr)
                && rs_status(n).2 == dr
            {
                for rs in active(&newest_first) {
                    self.scale_rs(&rs.name_any(), 0).await?;
                }
                return Ok(());
            }
        }
        if is_recreate(&self.d) {
            return Ok(());
        }
        let mut rss = all_active;
        let allowed = if dr > 0 { dr + max_surge(&self.d) } else { 0 };
        let to_add = allowed - sum_spec(&rss);
        // Larger first; ties newer first when growing, older first when shrinking.
        let created = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        rss.sort_by(|a, b| {
            rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
                if to_add > 0 {
                    created(b).cmp(&created(a))
                } else {
                    created(a).cmp(&created(b))
                }
            })
        });
        let mut sizes: Vec<(String, i32)> = Vec::new();
        let mut added = 0;
        for rs in &rss {
            let mut size = rs_replicas(rs);
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                size += p;
                added += p;
            }
            sizes.push((rs.name_any(), size));
        }
        if to_add != 0 && added != to_add {
            if let Some(first) = sizes.first_mut() {
                first.1 = (first.1 + to_add - added).max(0);
            }
        }
        for (name, size) in sizes {
            self.scale_rs(&name, size).await?;
        }
        Ok(())
    }

    /// upstream's GetProportion / getReplicaSetFraction.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        let r = rs_replicas(rs);
        if r == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let dr = replicas(&self.d);
        let fraction = if dr == 0 {
            -r
        } else {
            let target = dr + max_surge(&self.d);
            let annotated =
                annotation_i32(rs, MAX_REPLICAS).unwrap_or_else(|| self.orig.replicas.unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                ((f64::from(r) * f64::from(target)) / f64::from(annotated)).round() as i32 - r
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Delete old ReplicaSets with nothing left beyond `revisionHistoryLimit`, lowest
    /// revision first (upstream's cleanupDeployment).
    pub async fn cleanup(&mut self) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<ReplicaSet> = self
            .old_rss()
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|r| {
            (
                revision_of(r),
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        for rs in cleanable.iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            tracing::info!(key = %self.key, rs = %rs.name_any(), "deleting old replica set beyond the history limit");
            match self
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.api_err("deleting an old replica set")(e)),
            }
            self.rss.retain(|r| r.metadata.name != rs.metadata.name);
        }
        Ok(())
    }

    pub fn conds(&self) -> &[k8s_openapi::api::apps::v1::DeploymentCondition] {
        self.status.conditions.as_deref().unwrap_or(&[])
    }

    pub fn set_cond(&mut self, ty: &str, status: &str, reason: &str, msg: &str) {
        let conds = self.status.conditions.get_or_insert_with(Vec::new);
        crate::conditions::set(conds, ty, status, reason, msg);
    }

    /// upstream's calculateStatus: counts from the ReplicaSets and the Available condition.
    pub fn calculate_status(&self) -> DeploymentStatus {
        let all = self.all_rss();
        let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
        let total = sum_spec(&all);
        let nz = |n: i32| (n != 0).then_some(n);
        let mut s = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nz(all.iter().map(|r| rs_status(r).0).sum()),
            updated_replicas: nz(self.new_rs().map_or(0, |r| rs_status(r).0)),
            ready_replicas: nz(all.iter().map(|r| rs_status(r).1).sum()),
            available_replicas: nz(available),
            unavailable_replicas: nz((total - available).max(0)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            ..Default::default()
        };
        let conds = s.conditions.get_or_insert_with(Vec::new);
        if available >= replicas(&self.d) - util::max_unavailable(&self.d) {
            crate::conditions::set(
                conds,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            );
        } else {
            crate::conditions::set(
                conds,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            );
        }
        s
    }

    /// Write `status` if it differs from what is stored.
    pub async fn write_status(&mut self) -> Result<(), Error> {
        if self.status == self.orig {
            return Ok(());
        }
        let mut v = serde_json::to_value(&self.status).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for f in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ] {
                o.entry(f).or_insert(serde_json::Value::Null);
            }
        }
        self.d_api
            .patch_status(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": v })),
            )
            .await
            .map_err(self.api_err("writing status"))?;
        self.orig = self.status.clone();
        Ok(())
    }
}
