//! What a pod asks for and what a node offers, in upstream's units: requests summed over
//! containers, the max over init containers, sidecars added, `overhead` on top.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// Upstream's defaults for a container that requests no cpu/memory, used only in scoring so
/// that many request-less pods do not pile onto one node.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A resource vector: cpu in millicores, memory and ephemeral storage in bytes, every other
/// (extended, hugepages) resource in whole units. `pods` is a count, only meaningful on nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli(q),
            "memory" => self.memory = quantity::value(q),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(q),
            "pods" => self.allowed_pods = quantity::value(q),
            other => {
                self.scalar.insert(other.to_string(), quantity::value(q));
            }
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Element-wise maximum (upstream's `SetMaxResource`).
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

/// The parts of a pod spec that resource arithmetic reads, so the same upstream rules serve
/// k8s-openapi's `PodSpec` and the controllers' slim cached pods.
pub trait PodResources {
    type Container: ContainerResources;
    fn containers(&self) -> &[Self::Container];
    fn init_containers(&self) -> &[Self::Container];
    fn overhead(&self) -> Option<&BTreeMap<String, Quantity>>;
}

/// A container's requests, limits and restart policy (`Always` marks a sidecar).
pub trait ContainerResources {
    fn requests(&self) -> Option<&BTreeMap<String, Quantity>>;
    fn limits(&self) -> Option<&BTreeMap<String, Quantity>>;
    fn restart_policy(&self) -> Option<&str>;
}

/// A resource name → quantity map, as k8s-openapi spells requests, limits and overhead.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Implements `PodResources` and `ContainerResources` for a pod spec and container type with
/// k8s-openapi's field names (k8s-openapi's own, and the controllers' slim cached pod).
#[macro_export]
macro_rules! pod_resources_for {
    ($spec:ty, $container:ty) => {
        impl $crate::resources::PodResources for $spec {
            type Container = $container;
            fn containers(&self) -> &[$container] {
                &self.containers
            }
            fn init_containers(&self) -> &[$container] {
                self.init_containers.as_deref().unwrap_or_default()
            }
            fn overhead(&self) -> Option<&$crate::resources::ResourceList> {
                self.overhead.as_ref()
            }
        }

        impl $crate::resources::ContainerResources for $container {
            fn requests(&self) -> Option<&$crate::resources::ResourceList> {
                self.resources.as_ref().and_then(|r| r.requests.as_ref())
            }
            fn limits(&self) -> Option<&$crate::resources::ResourceList> {
                self.resources.as_ref().and_then(|r| r.limits.as_ref())
            }
            fn restart_policy(&self) -> Option<&str> {
                self.restart_policy.as_deref()
            }
        }
    };
}

pod_resources_for!(PodSpec, Container);

fn container_requests(c: &impl ContainerResources) -> Resources {
    Resources::from_list(c.requests())
}

/// upstream `resourcehelper.PodRequests`: containers summed; each init container runs
/// alongside the restartable (sidecar) init containers started before it; the pod needs the
/// larger of the two phases; overhead is added.
pub fn pod_requests(spec: &impl PodResources) -> Resources {
    let mut reqs = Resources::default();
    for c in spec.containers() {
        reqs.add(&container_requests(c));
    }
    let mut restartable = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers() {
        let r = container_requests(c);
        let phase = if c.restart_policy() == Some("Always") {
            reqs.add(&r);
            restartable.add(&r);
            restartable.clone()
        } else {
            let mut t = r;
            t.add(&restartable);
            t
        };
        init_max.max_with(&phase);
    }
    reqs.max_with(&init_max);
    if let Some(o) = spec.overhead() {
        reqs.add(&Resources::from_list(Some(o)));
    }
    reqs
}

/// A pod's limits as upstream's PodLimits sums them (containers, init maximum, overhead).
pub fn pod_limits(spec: &impl PodResources) -> Resources {
    let mut sum = Resources::default();
    for c in spec.containers() {
        sum.add(&Resources::from_list(c.limits()));
    }
    for c in spec.init_containers() {
        sum.max_with(&Resources::from_list(c.limits()));
    }
    if let Some(o) = spec.overhead() {
        sum.add(&Resources::from_list(Some(o)));
    }
    sum
}

/// The cpu/memory used in scoring: as `pod_requests`, but a container with no cpu (memory)
/// request counts upstream's default (`schedutil.GetNonzeroRequests`).
pub fn pod_non_zero_requests(spec: &PodSpec) -> (i64, i64) {
    let nz = |c: &Container| {
        let r = container_requests(c);
        let has = |n: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(n))
        };
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY
            },
        )
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let (a, b) = nz(c);
        cpu += a;
        mem += b;
    }
    let (mut rcpu, mut rmem, mut icpu, mut imem) = (0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let (a, b) = nz(c);
        let (pa, pb) = if c.restart_policy.as_deref() == Some("Always") {
            cpu += a;
            mem += b;
            rcpu += a;
            rmem += b;
            (rcpu, rmem)
        } else {
            (a + rcpu, b + rmem)
        };
        icpu = icpu.max(pa);
        imem = imem.max(pb);
    }
    cpu = cpu.max(icpu);
    mem = mem.max(imem);
    if let Some(o) = &spec.overhead {
        let o = Resources::from_list(Some(o));
        cpu += o.milli_cpu;
        mem += o.memory;
    }
    (cpu, mem)
}

pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    Resources::from_list(
        status
            .and_then(|s| s.allocatable.as_ref())
            .or_else(|| status.and_then(|s| s.capacity.as_ref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("pod spec")
    }

    #[test]
    fn containers_sum_init_max_sidecars_and_overhead() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "big", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_requests(&s);
        // init phase: 1000m + the 50m sidecar = 1050m > 350m of the running phase.
        assert_eq!(r.milli_cpu, 1060);
        assert_eq!(r.memory, 100 * 1024 * 1024);
        assert_eq!(r.scalar("example.com/gpu"), 1);
        let (cpu, mem) = pod_non_zero_requests(&s);
        assert_eq!(cpu, 1060);
        // "b" and "side" request no memory: each counts the 200Mi default.
        assert_eq!(mem, 100 * 1024 * 1024 + 2 * DEFAULT_MEMORY);
    }

    #[test]
    fn request_less_pod_is_zero_but_scores_as_default() {
        let s = spec(json!({"containers": [{"name": "a"}]}));
        assert_eq!(pod_requests(&s), Resources::default());
        assert_eq!(
            pod_non_zero_requests(&s),
            (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)
        );
    }
}
