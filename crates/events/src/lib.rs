//! core/v1 Events (what `kubectl describe` and `kubectl get events` show) with upstream's
//! aggregation: the same reason and message about the same object within ten minutes bumps
//! `count` and `lastTimestamp` of one Event instead of writing another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

/// How long a repeated Event is folded into the first one (client-go's correlator).
const AGGREGATE_FOR: Duration = Duration::from_secs(600);
/// Distinct Events remembered per recorder; the oldest are forgotten beyond this.
const REMEMBERED: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct Key {
    uid: String,
    type_: &'static str,
    reason: String,
    message: String,
}

struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Records Events as one controller (`source.component` and `reportingComponent`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// `source.host` and `reportingInstance`: the node, for a kubelet's Events.
    host: Option<String>,
    seen: Arc<Mutex<HashMap<Key, Seen>>>,
}

/// A reference to `obj` for `involvedObject`.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Self {
        Recorder {
            client,
            component,
            host: None,
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Events from a node's component name the node (`source.host`), as the kubelet's do.
    pub fn with_host(mut self, host: String) -> Self {
        self.host = Some(host);
        self
    }

    /// Record an Event about `obj`. Best effort, as upstream's recorder: a failure is logged,
    /// the object's status carries the news.
    pub async fn record<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        self.record_ref(reference(obj), type_, reason, message)
            .await
    }

    /// Record an Event about the object `involved` names.
    pub async fn record_ref(
        &self,
        involved: ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        // Cluster-scoped objects' Events live in `default`, as upstream's.
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let key = Key {
            uid: involved.uid.clone().unwrap_or_default(),
            type_: type_.as_str(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = Timestamp::now();
        let mut seen = self.seen.lock().await;
        if let Some(s) = seen.get_mut(&key) {
            if s.last.elapsed() < AGGREGATE_FOR {
                s.count += 1;
                s.last = Instant::now();
                let patch = json!({"count": s.count, "lastTimestamp": now.to_string()});
                let (ns, name) = (s.namespace.clone(), s.name.clone());
                drop(seen);
                let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => return,
                    // Gone (TTL, deleted): write a new one below.
                    Err(e) => tracing::debug!(error = %e, event = name, "event patch failed"),
                }
                seen = self.seen.lock().await;
                seen.remove(&key);
            }
        }
        if seen.len() >= REMEMBERED {
            if let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        drop(seen);
        let object_name = involved.name.clone().unwrap_or_default();
        let ev = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.as_str().into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.into())),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &ev).await {
            Ok(created) => {
                self.seen.lock().await.insert(
                    key,
                    Seen {
                        namespace,
                        name: created.name_any(),
                        count: 1,
                        last: Instant::now(),
                    },
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, component = self.component, reason, "could not record an event")
            }
        }
    }
}
