//! The ResourceQuota controller (upstream's pkg/controller/resourcequota): `status.hard`
//! mirrors the spec and `status.used` counts what the namespace holds, recounted when `hard`
//! changes, when counted objects end or go, and every five minutes (upstream's resync).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::{Action, Controller};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, ReplicationController, ResourceQuota, ResourceQuotaStatus,
    Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Resource, ResourceExt};

use capstan_scheduler::quantity;
use capstan_scheduler::resources::{pod_limits, pod_requests, Resources};

use crate::backoff::Backoff;
use crate::cached_pod::Pod;
use crate::context::Context;
use crate::pods;

/// upstream's `--resource-quota-sync-period`.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

struct Loop {
    ctx: Arc<Context>,
    backoff: Backoff,
}

/// Every quota of the object's namespace (a change there may move their usage).
fn quotas_of<K: Resource>(store: &Store<ResourceQuota>, obj: &K) -> Vec<ObjectRef<ResourceQuota>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(ns.as_str()))
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

/// The namespaces where objects of a kind are deleted (upstream's replenishment: a delete
/// gives quota back; a create was charged by admission already).
fn deletions<K>(api: Api<K>) -> futures::stream::BoxStream<'static, String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    capstan_slim::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(|ev| async move {
            match ev {
                Ok(watcher::Event::Delete(o)) => o.meta().namespace.clone(),
                _ => None,
            }
        })
        .boxed()
}

pub async fn run(ctx: Arc<Context>) {
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(60)),
    });
    let c = ctx.client.clone();
    // Quotas trigger a count when their `hard` changes, not when `used` does: admission
    // charges `used` for objects not stored yet, and a count then would undo the charge.
    let (store, writer) = reflector::store();
    let quotas = reflector::reflector(
        writer,
        capstan_slim::watcher(
            Api::<ResourceQuota>::all(c.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(
        |q: &ResourceQuota| {
            let text = serde_json::to_string(&(
                q.spec.as_ref().map(|s| &s.hard),
                q.status.as_ref().map(|s| &s.hard),
            ))
            .unwrap_or_default();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&text, &mut h);
            Some(std::hash::Hasher::finish(&h))
        },
        PredicateConfig::default(),
    );
    let replenished = futures::stream::select_all([
        deletions(Api::<Service>::all(c.clone())),
        deletions(Api::<ConfigMap>::all(c.clone())),
        deletions(Api::<Secret>::all(c.clone())),
        deletions(Api::<PersistentVolumeClaim>::all(c.clone())),
        deletions(Api::<ReplicationController>::all(c.clone())),
    ]);
    let in_ns = store.clone();
    let replenished = replenished.flat_map(move |ns| {
        let refs: Vec<ObjectRef<ResourceQuota>> = in_ns
            .state()
            .iter()
            .filter(|q| q.metadata.namespace.as_deref() == Some(ns.as_str()))
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    let (by_pod, pods) = (store.clone(), ctx.pods().store.clone());
    Controller::for_stream(quotas, store)
        // A pod gives its quota back when it ends or is gone.
        .watches_shared_stream(ctx.pods().subscribe(), move |p: Arc<Pod>| {
            let gone = pods.get(&ObjectRef::from_obj(p.as_ref())).is_none();
            if gone || pods::is_terminal(&p) {
                quotas_of(&by_pod, p.as_ref())
            } else {
                Vec::new()
            }
        })
        .reconcile_on(replenished)
        .run(reconcile, error_policy, lp)
        .await;
}

fn error_policy(q: Arc<ResourceQuota>, err: &Error, lp: Arc<Loop>) -> Action {
    let key = pods::key(&q.metadata);
    let (attempts, delay) = lp.backoff.failed(&key);
    tracing::warn!(quota = %key, attempts, error = %err, "quota usage update failed; retrying");
    Action::requeue(delay)
}

/// What a resource name counts, for the kinds the API lists (`count/<plural>[.<group>]`
/// and the legacy names).
fn counted(resource: &str) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    let r = resource.strip_prefix("count/").unwrap_or(resource);
    Some(match r {
        "services" => ("", "v1", "Service", "services"),
        "configmaps" => ("", "v1", "ConfigMap", "configmaps"),
        "secrets" => ("", "v1", "Secret", "secrets"),
        "persistentvolumeclaims" => ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        "replicationcontrollers" => ("", "v1", "ReplicationController", "replicationcontrollers"),
        "resourcequotas" => ("", "v1", "ResourceQuota", "resourcequotas"),
        "serviceaccounts" => ("", "v1", "ServiceAccount", "serviceaccounts"),
        "endpoints" => ("", "v1", "Endpoints", "endpoints"),
        "podtemplates" => ("", "v1", "PodTemplate", "podtemplates"),
        "deployments.apps" => ("apps", "v1", "Deployment", "deployments"),
        "replicasets.apps" => ("apps", "v1", "ReplicaSet", "replicasets"),
        "statefulsets.apps" => ("apps", "v1", "StatefulSet", "statefulsets"),
        "daemonsets.apps" => ("apps", "v1", "DaemonSet", "daemonsets"),
        "controllerrevisions.apps" => ("apps", "v1", "ControllerRevision", "controllerrevisions"),
        "jobs.batch" => ("batch", "v1", "Job", "jobs"),
        "cronjobs.batch" => ("batch", "v1", "CronJob", "cronjobs"),
        "ingresses.networking.k8s.io" => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        "networkpolicies.networking.k8s.io" => (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        "poddisruptionbudgets.policy" => (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
        "horizontalpodautoscalers.autoscaling" => (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        "leases.coordination.k8s.io" => ("coordination.k8s.io", "v1", "Lease", "leases"),
        _ => return None,
    })
}

fn decimal(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn bytes(n: i128) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if n == 0 || n % 1024 != 0 {
        return n.to_string();
    }
    let (mut v, mut unit) = (n, "");
    for u in UNITS {
        if v % 1024 != 0 {
            break;
        }
        v /= 1024;
        unit = u;
    }
    format!("{v}{unit}")
}

/// One compute resource (`cpu`, `memory`, `ephemeral-storage`, extended) of a vector.
fn amount(r: &Resources, name: &str) -> String {
    match name {
        "cpu" => decimal(i128::from(r.milli_cpu)),
        "memory" => bytes(i128::from(r.memory)),
        "ephemeral-storage" => bytes(i128::from(r.ephemeral_storage)),
        other => r.scalar(other).to_string(),
    }
}

/// A quota's scopes as selector requirements (scope, operator, values): `spec.scopes` each
/// `Exists`, then `spec.scopeSelector`'s expressions.
type Requirement = (String, String, Vec<String>);

fn scope_requirements(q: &ResourceQuota) -> Vec<Requirement> {
    let Some(spec) = q.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<Requirement> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| (s.clone(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in spec
        .scope_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
    {
        out.push((
            e.scope_name.clone(),
            e.operator.clone(),
            e.values.clone().unwrap_or_default(),
        ));
    }
    out
}

/// A requirement over the one value a scope reads (upstream's label set always holds the
/// key, so `DoesNotExist` never matches; `Exists` means "not empty").
fn requirement_matches(op: &str, values: &[String], value: &str) -> bool {
    match op {
        "Exists" => !value.is_empty(),
        "In" => values.iter().any(|v| v == value),
        "NotIn" => !values.iter().any(|v| v == value),
        _ => false,
    }
}

/// Whether every scope of the quota matches `pod` (upstream's podMatchesScopeFunc); the API
/// server's quota admission reads the same scopes from the pod's JSON.
fn pod_in_scope(requirements: &[Requirement], pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let terminating = spec
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|s| s >= 0);
    let best_effort = pod
        .status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .is_some_and(|q| q == "BestEffort");
    let class = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .unwrap_or("");
    requirements
        .iter()
        .all(|(scope, op, values)| match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort,
            "NotBestEffort" => !best_effort,
            "PriorityClass" => requirement_matches(op, values, class),
            "CrossNamespacePodAffinity" => spec.is_some_and(cross_namespace_affinity),
            _ => false,
        })
}

/// upstream's usesCrossNamespacePodAffinity.
fn cross_namespace_affinity(spec: &crate::cached_pod::PodSpec) -> bool {
    let Some(a) = spec.affinity.as_ref() else {
        return false;
    };
    let cross = |t: &k8s_openapi::api::core::v1::PodAffinityTerm| {
        t.namespaces.as_ref().is_some_and(|n| !n.is_empty()) || t.namespace_selector.is_some()
    };
    let terms =
        |req: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>,
         pref: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            req.into_iter().flatten().any(cross)
                || pref
                    .into_iter()
                    .flatten()
                    .any(|w| cross(&w.pod_affinity_term))
        };
    a.pod_affinity.as_ref().is_some_and(|p| {
        terms(
            p.required_during_scheduling_ignored_during_execution
                .as_ref(),
            p.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        )
    }) || a.pod_anti_affinity.as_ref().is_some_and(|p| {
        terms(
            p.required_during_scheduling_ignored_during_execution
                .as_ref(),
            p.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        )
    })
}

/// Whether every scope matches a PersistentVolumeClaim (only `VolumeAttributesClass` can).
fn claim_in_scope(requirements: &[Requirement], claim: &DynamicObject) -> bool {
    let class = claim
        .data
        .pointer("/spec/volumeAttributesClassName")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    requirements.iter().all(|(scope, op, values)| {
        scope == "VolumeAttributesClass" && requirement_matches(op, values, class)
    })
}

/// The namespace's usage of each resource `hard` names, counting only what the quota's
/// scopes match.
async fn usage(
    lp: &Loop,
    ns: &str,
    hard: &BTreeMap<String, Quantity>,
    scopes: &[Requirement],
) -> Result<BTreeMap<String, Quantity>, kube::Error> {
    let pods: Vec<Arc<Pod>> = lp
        .ctx
        .pods()
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && !pods::is_terminal(p))
        .filter(|p| pod_in_scope(scopes, p))
        .collect();
    let scoped = !scopes.is_empty();
    let (mut req, mut lim) = (Resources::default(), Resources::default());
    for p in &pods {
        if let Some(spec) = &p.spec {
            req.add(&pod_requests(spec));
            lim.add(&pod_limits(spec));
        }
    }
    let mut used = BTreeMap::new();
    let mut lists: BTreeMap<&'static str, Vec<DynamicObject>> = BTreeMap::new();
    for name in hard.keys() {
        let value = match name.as_str() {
            "pods" | "count/pods" => pods.len().to_string(),
            "cpu" | "requests.cpu" => amount(&req, "cpu"),
            "memory" | "requests.memory" => amount(&req, "memory"),
            "ephemeral-storage" | "requests.ephemeral-storage" => amount(&req, "ephemeral-storage"),
            "limits.cpu" => amount(&lim, "cpu"),
            "limits.memory" => amount(&lim, "memory"),
            "limits.ephemeral-storage" => amount(&lim, "ephemeral-storage"),
            // Claims' storage, all or of one storage class (before the pods' `requests.*`).
            n if n == "requests.storage" || storage_class_key(n).is_some() => {
                let class = storage_class_key(n);
                let pvcs = list(lp, ns, "persistentvolumeclaims", &mut lists).await?;
                let claims = pvcs
                    .iter()
                    .filter(|p| !scoped || claim_in_scope(scopes, p))
                    .filter(|p| {
                        class.is_none_or(|(sc, _)| {
                            p.data
                                .pointer("/spec/storageClassName")
                                .and_then(|v| v.as_str())
                                == Some(sc)
                        })
                    });
                match class {
                    Some((_, "persistentvolumeclaims")) => claims.count().to_string(),
                    _ => {
                        let total: i64 = claims
                            .filter_map(|p| {
                                p.data.pointer("/spec/resources/requests/storage")?.as_str()
                            })
                            .map(quantity::value)
                            .sum();
                        bytes(i128::from(total))
                    }
                }
            }
            n if n.starts_with("requests.") => amount(&req, &n["requests.".len()..]),
            n if n.starts_with("limits.") => amount(&lim, &n["limits.".len()..]),
            // Scopes match pods and claims only: a scoped quota counts no other kind.
            n if scoped && counted(n).is_some_and(|c| c.3 != "persistentvolumeclaims") => {
                "0".into()
            }
            "services.loadbalancers" | "services.nodeports" if scoped => "0".into(),
            "services.loadbalancers" | "services.nodeports" => {
                let svcs = list(lp, ns, "services", &mut lists).await?;
                let mut n = 0usize;
                for s in svcs {
                    let t = s
                        .data
                        .pointer("/spec/type")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    if name == "services.loadbalancers" {
                        n += usize::from(t == "LoadBalancer");
                    } else if t == "NodePort" || t == "LoadBalancer" {
                        n += s
                            .data
                            .pointer("/spec/ports")
                            .and_then(|p| p.as_array())
                            .map_or(0, |p| p.len());
                    }
                }
                n.to_string()
            }
            other => match counted(other) {
                Some(_) => list(lp, ns, other, &mut lists)
                    .await?
                    .iter()
                    .filter(|o| !scoped || claim_in_scope(scopes, o))
                    .count()
                    .to_string(),
                // Not something capstan counts yet: report what is known (nothing used).
                None => "0".into(),
            },
        };
        used.insert(name.clone(), Quantity(value));
    }
    Ok(used)
}

/// `<class>.storageclass.storage.k8s.io/<requests.storage|persistentvolumeclaims>`: the
/// class and which of the two.
fn storage_class_key(resource: &str) -> Option<(&str, &str)> {
    let (class, what) = resource.split_once(".storageclass.storage.k8s.io/")?;
    matches!(what, "requests.storage" | "persistentvolumeclaims").then_some((class, what))
}

/// The namespace's objects a resource name counts (listed once per pass).
async fn list<'a>(
    lp: &Loop,
    ns: &str,
    resource: &str,
    cache: &'a mut BTreeMap<&'static str, Vec<DynamicObject>>,
) -> Result<&'a Vec<DynamicObject>, kube::Error> {
    let Some((group, version, kind, plural)) = counted(resource) else {
        return Ok(cache.entry("").or_default());
    };
    if !cache.contains_key(plural) {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(lp.ctx.client.clone(), ns, &ar);
        let items = api.list(&ListParams::default()).await?.items;
        cache.insert(plural, items);
    }
    Ok(cache.entry(plural).or_default())
}

async fn reconcile(q: Arc<ResourceQuota>, lp: Arc<Loop>) -> Result<Action, Error> {
    let ns = q.namespace().unwrap_or_default();
    let key = pods::key(&q.metadata);
    let hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let used = usage(&lp, &ns, &hard, &scope_requirements(&q)).await?;
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    if q.status.as_ref().map(normalized) != Some(normalized(&status)) {
        let mut next = (*q).clone();
        next.status = Some(status);
        next.metadata.managed_fields = None;
        let api: Api<ResourceQuota> = Api::namespaced(lp.ctx.client.clone(), &ns);
        match api
            .replace_status(&q.name_any(), &PostParams::default(), &next)
            .await
        {
            Ok(_) => tracing::debug!(quota = %key, "quota usage updated"),
            // The admission plugin charged it meanwhile: count again.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(50)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    lp.backoff.reset(&key);
    Ok(Action::requeue(RESYNC))
}

/// Quantities compared by value (`1000m` is `1`).
fn normalized(s: &ResourceQuotaStatus) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for (which, m) in [("hard", &s.hard), ("used", &s.used)] {
        for (k, v) in m.iter().flatten() {
            out.push((which.to_string(), k.clone(), quantity::milli(&v.0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_quotas_count_the_pods_they_match() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let best_effort = pod(
            serde_json::json!({"spec": {"containers": []}, "status": {"qosClass": "BestEffort"}}),
        );
        let high = pod(
            serde_json::json!({"spec": {"containers": [], "priorityClassName": "high",
            "activeDeadlineSeconds": 10}, "status": {"qosClass": "Burstable"}}),
        );
        let req = |s: &str, op: &str, v: &[&str]| {
            (
                s.to_string(),
                op.to_string(),
                v.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            )
        };
        assert!(pod_in_scope(&[], &best_effort));
        assert!(pod_in_scope(
            &[req("BestEffort", "Exists", &[])],
            &best_effort
        ));
        assert!(!pod_in_scope(&[req("BestEffort", "Exists", &[])], &high));
        let both = [
            req("Terminating", "Exists", &[]),
            req("PriorityClass", "In", &["high"]),
        ];
        assert!(pod_in_scope(&both, &high) && !pod_in_scope(&both, &best_effort));
        assert!(pod_in_scope(
            &[req("PriorityClass", "NotIn", &["high"])],
            &best_effort
        ));
        assert!(!pod_in_scope(
            &[req("PriorityClass", "DoesNotExist", &[])],
            &best_effort
        ));
        // No pod has a volume attributes class.
        assert!(!pod_in_scope(
            &[req("VolumeAttributesClass", "Exists", &[])],
            &high
        ));
    }

    #[test]
    fn amounts_print_in_their_units() {
        assert_eq!(decimal(1500), "1500m");
        assert_eq!(decimal(2000), "2");
        assert_eq!(bytes(128 * 1024 * 1024), "128Mi");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(bytes(0), "0");
    }
}
