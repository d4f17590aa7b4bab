//! The disruption loop (upstream's pkg/controller/disruption): a PodDisruptionBudget's status
//! — expected, desired and current healthy pods, disruptions allowed, evictions in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::Scope;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::events::{EventType, Recorder};
use crate::{owners, pods, Context};

/// How long an eviction is assumed to be on its way before the pod counts again (upstream's
/// DeletionTimeout).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("found no controller ref for pod {0:?}")]
    NoController(String),
    #[error("found no controllers for pod {0:?}")]
    NoControllers(String),
    #[error("{0} does not implement the scale subresource")]
    NoScale(String),
    #[error("discovery of {0}: {1}")]
    Discovery(String, kube::Error),
}

struct Cx {
    ctx: Arc<Context>,
    recorder: Recorder,
    backoff: Backoff,
    /// Owner kinds found through discovery (`apiVersion/kind` → resource, namespaced, has
    /// `/scale`), as upstream's cached REST mapper: a budget syncs on every change of its
    /// pods, and discovery is two requests. A failed lookup drops the entry.
    kinds: std::sync::Mutex<HashMap<String, Kind>>,
}

#[derive(Clone)]
struct Kind {
    resource: kube::api::ApiResource,
    namespaced: bool,
    scalable: bool,
}

/// Run the loop until aborted.
pub async fn run(ctx: Arc<Context>) {
    let cx = Arc::new(Cx {
        recorder: ctx.recorder("controllermanager"),
        backoff: Backoff::new(ctx.opts.sets_backoff_base, Duration::from_secs(300)),
        ctx: ctx.clone(),
        kinds: Default::default(),
    });
    let pods = ctx.pods().subscribe();
    ctx.pods().ready().await;
    let controller = capstan_slim::controller(
        Api::<PodDisruptionBudget>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        // A pod change concerns the budgets of its namespace that select it.
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            let labels = capstan_scheduler::selectors::labels_of(&pod.metadata).clone();
            budgets
                .state()
                .iter()
                .filter(|b| b.metadata.namespace == pod.metadata.namespace)
                .filter(|b| selects(b, &labels))
                .map(|b| ObjectRef::from_obj(&**b))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, cx)
        .await;
}

/// policy/v1: an empty selector selects every pod of the namespace, a missing one none.
fn selects(pdb: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) => capstan_scheduler::selectors::selector_matches(sel, labels),
        None => false,
    }
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, err: &Error, cx: Arc<Cx>) -> Action {
    let key = pods::key(&pdb.metadata);
    let (attempts, delay) = cx.backoff.failed(&key);
    tracing::warn!(pdb = %key, error = %err, attempts, retry_in = ?delay, "disruption budget sync failed");
    Action::requeue(delay)
}

/// An int-or-percent of `total`, percentages rounded up (GetScaledValueFromIntOrPercent).
fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// The replicas the pods' controllers ask for, each controller counted once (upstream's
/// getExpectedScale: a ReplicaSet a Deployment controls counts as the Deployment).
async fn expected_scale(cx: &Cx, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, Error> {
    let client = cx.ctx.client.clone();
    let mut seen: HashMap<String, i32> = HashMap::new();
    for p in pods {
        let Some(r) = owners::controller_of(&p.metadata) else {
            return Err(Error::NoController(
                p.metadata.name.clone().unwrap_or_default(),
            ));
        };
        if seen.contains_key(&r.uid) {
            continue;
        }
        let (uid, scale) = match (r.api_version.as_str(), r.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await?;
                match owners::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    Some(d) => {
                        let dep = Api::<Deployment>::namespaced(client.clone(), ns)
                            .get(&d.name)
                            .await?;
                        (
                            d.uid.clone(),
                            dep.spec.and_then(|s| s.replicas).unwrap_or(1),
                        )
                    }
                    None => (r.uid.clone(), rs.spec.and_then(|s| s.replicas).unwrap_or(1)),
                }
            }
            ("v1", "ReplicationController") => {
                let rc = Api::<ReplicationController>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await?;
                (r.uid.clone(), rc.spec.and_then(|s| s.replicas).unwrap_or(1))
            }
            ("apps/v1", "StatefulSet") => {
                let s = Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await?;
                (r.uid.clone(), s.spec.and_then(|s| s.replicas).unwrap_or(1))
            }
            _ => {
                let pod = p.metadata.name.clone().unwrap_or_default();
                (r.uid.clone(), scale_of(cx, ns, r, &pod).await?)
            }
        };
        seen.insert(r.uid.clone(), scale);
        if uid != r.uid {
            seen.insert(uid, 0);
        }
    }
    Ok(seen.values().sum())
}

/// Any other controller through its `scale` subresource (upstream's getScaleController): its
/// resource from discovery, the Scale's replicas if the Scale is the owner the reference
/// names (a custom resource with `subresources.scale`, say).
async fn scale_of(cx: &Cx, ns: &str, r: &OwnerReference, pod: &str) -> Result<i32, Error> {
    let (group, version) = match r.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version.as_str()),
    };
    let key = format!("{}/{}", r.api_version, r.kind);
    let cached = cx
        .kinds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let kind = match cached {
        Some(k) => k,
        None => {
            let gvk = GroupVersionKind::gvk(group, version, &r.kind);
            let (resource, caps) = kube::discovery::pinned_kind(&cx.ctx.client, &gvk)
                .await
                .map_err(|e| Error::Discovery(key.clone(), e))?;
            let k = Kind {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
                scalable: caps
                    .subresources
                    .iter()
                    .any(|(sub, _)| sub.plural == "scale"),
            };
            cx.kinds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), k.clone());
            k
        }
    };
    let api: Api<DynamicObject> = if kind.namespaced {
        Api::namespaced_with(cx.ctx.client.clone(), ns, &kind.resource)
    } else {
        Api::all_with(cx.ctx.client.clone(), &kind.resource)
    };
    let result = api.get_scale(&r.name).await;
    if result.is_err() {
        // The kind may have changed (a CRD re-created without /scale): ask discovery again.
        cx.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
    match result {
        Ok(scale) if scale.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
        }
        Ok(_) => Err(Error::NoControllers(pod.to_string())),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            if kind.scalable {
                Err(Error::NoControllers(pod.to_string()))
            } else if group.is_empty() {
                Err(Error::NoScale(kind.resource.plural))
            } else {
                Err(Error::NoScale(format!("{}.{group}", kind.resource.plural)))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Set the DisruptionAllowed condition (lastTransitionTime moves with its status).
fn set_condition(
    conds: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let now = Time(Timestamp::now());
    match conds.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, cx: Arc<Cx>) -> Result<Action, Error> {
    let key = pods::key(&pdb.metadata);
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = cx
        .ctx
        .pods()
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
        .filter(|p| selects(&pdb, capstan_scheduler::selectors::labels_of(&p.metadata)))
        .collect();
    if pods.is_empty() {
        cx.recorder
            .record(&*pdb, EventType::Normal, "NoPods", "No matching pods found")
            .await;
    }

    // expectedPods and desiredHealthy (upstream's getExpectedPodCount).
    let counts = match (&spec.max_unavailable, &spec.min_available) {
        (Some(mu), _) => expected_scale(&cx, &ns, &pods)
            .await
            .map(|e| (e, (e - scaled(mu, e)).max(0))),
        (None, Some(IntOrString::Int(n))) => Ok((pods.len() as i32, *n)),
        (None, Some(ma)) => expected_scale(&cx, &ns, &pods)
            .await
            .map(|e| (e, scaled(ma, e))),
        (None, None) => Ok((pods.len() as i32, 0)),
    };
    let (expected, desired) = match counts {
        Ok(c) => c,
        Err(e) => {
            // Fail safe: no disruption is allowed while the budget cannot be computed.
            let msg = e.to_string();
            cx.recorder
                .record(
                    &*pdb,
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    &format!("Failed to calculate the number of expected pods: {msg}"),
                )
                .await;
            let mut status = pdb.status.clone().unwrap_or_default();
            status.disruptions_allowed = 0;
            let mut conds = status.conditions.take().unwrap_or_default();
            set_condition(
                &mut conds,
                "False",
                "SyncFailed",
                &msg,
                pdb.metadata.generation,
            );
            status.conditions = Some(conds);
            write_status(&cx, &pdb, status).await?;
            return Err(e);
        }
    };

    // Evictions not yet seen as deletions stay counted as disrupted for a while.
    let now = Timestamp::now();
    let by_name: HashMap<&str, &Arc<Pod>> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
        .collect();
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    for (name, t) in pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
    {
        let Some(p) = by_name.get(name.as_str()) else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let expires = t.0.as_second() + DELETION_TIMEOUT.as_secs() as i64;
        if expires <= now.as_second() {
            tracing::info!(pdb = %key, pod = %name, "eviction not confirmed in time; counting the pod again");
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        disrupted.insert(name, t);
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| pods::is_ready(p))
        .count() as i32;
    let mut allowed = healthy - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
        observed_generation: pdb.metadata.generation,
        conditions: pdb.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let mut conds = status.conditions.take().unwrap_or_default();
    if allowed > 0 {
        set_condition(
            &mut conds,
            "True",
            "SufficientPods",
            "",
            pdb.metadata.generation,
        );
    } else {
        set_condition(
            &mut conds,
            "False",
            "InsufficientPods",
            "",
            pdb.metadata.generation,
        );
    }
    status.conditions = Some(conds);
    if pdb.status.as_ref() != Some(&status) {
        write_status(&cx, &pdb, status).await?;
    }
    cx.backoff.reset(&key);
    Ok(match recheck {
        Some(at) => Action::requeue(Duration::from_secs((at - now.as_second()).max(1) as u64)),
        None => Action::await_change(),
    })
}

/// Replace the status (a whole map: a merge patch could not drop disrupted pods), with the
/// resourceVersion read, so an eviction's concurrent write wins and this pass is redone.
async fn write_status(
    cx: &Cx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(cx.ctx.client.clone(), &ns);
    let mut next = pdb.clone();
    next.status = Some(status);
    match api
        .replace_status(
            pdb.metadata.name.as_deref().unwrap_or(""),
            &PostParams::default(),
            &next,
        )
        .await
    {
        // Changed meanwhile (an eviction): the change brings this budget round again.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::Int(1), 3), 1);
    }
}
