//! The scheduling loop: pop the most important pod, decide under the lock (filter, score or
//! preempt), assume the pod on its node, then bind concurrently (bounded) off the lock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::Semaphore;

use crate::cache::PodInfo;
use crate::diagnosis;
use crate::framework::{find_feasible, select_host, Cycle};
use crate::plugins::Plugin;
use crate::preemption;
use crate::queue::{Event, Popped};
use crate::state::{Shared, State};
use crate::volumes;
use crate::writes;

/// What one attempt decided, carried out after the lock is released.
enum Outcome {
    Bind {
        pod: Arc<Pod>,
        node: String,
    },
    Unschedulable {
        pod: Arc<Pod>,
        message: String,
        nominate: Option<String>,
        evict: Vec<Arc<Pod>>,
        clear: Vec<Arc<Pod>>,
    },
    Skip,
}

pub struct Loop {
    client: Client,
    shared: Arc<Shared>,
    binds: Arc<Semaphore>,
}

impl Loop {
    pub fn new(client: Client, shared: Arc<Shared>, max_binds: usize) -> Loop {
        Loop {
            client,
            shared,
            binds: Arc::new(Semaphore::new(max_binds.max(1))),
        }
    }

    pub async fn run(self) {
        let mut last_leftover_flush = Instant::now();
        let mut last_report = (Instant::now(), 0u64);
        loop {
            let now = Instant::now();
            if now.duration_since(last_report.0) >= Duration::from_secs(10) {
                let bound = self.shared.bound.load(std::sync::atomic::Ordering::Relaxed);
                if bound > last_report.1 {
                    let (active, backoff, waiting, in_flight) = self.shared.lock().queue.counts();
                    let rate = (bound - last_report.1) as f64
                        / now.duration_since(last_report.0).as_secs_f64();
                    tracing::info!(
                        bound,
                        per_second = rate as u64,
                        active,
                        backoff,
                        waiting,
                        in_flight,
                        "scheduler progress"
                    );
                }
                last_report = (now, bound);
            }
            let (popped, next) = {
                let mut st = self.shared.lock();
                if now.duration_since(last_leftover_flush) > Duration::from_secs(30) {
                    st.queue.flush_unschedulable_leftover(now);
                    last_leftover_flush = now;
                }
                let p = st.queue.pop(now);
                let next = st.queue.flush_backoff(now);
                (p, next)
            };
            match popped {
                Some(p) => self.schedule_one(p).await,
                None => {
                    let wait = next
                        .map(|t| t.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    let _ = tokio::time::timeout(wait, self.shared.wake.notified()).await;
                }
            }
        }
    }

    async fn schedule_one(&self, p: Popped) {
        let volume_check = if volumes::claims(&p.pod).is_empty() {
            Ok(volumes::ClaimNeeds::default())
        } else {
            volumes::check(&self.client, &p.pod).await
        };
        let (volume_check, select) = match volume_check {
            Ok(needs) => (Ok(needs.affinity), needs.select_node),
            Err(e) => (Err(e), Vec::new()),
        };
        let outcome = {
            let mut st = self.shared.lock();
            decide(&mut st, &p, volume_check)
        };
        match outcome {
            Outcome::Skip => {}
            Outcome::Bind { pod, node } => {
                // Holding a permit before spawning bounds the binds in flight and slows the
                // loop down when the API server is the bottleneck.
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return;
                };
                let client = self.client.clone();
                let shared = self.shared.clone();
                let key = p.key.clone();
                tokio::spawn(async move {
                    let bound = bind(&client, &shared, &key, &pod, &node, &select).await;
                    // The event is not part of the bind: free the slot first.
                    drop(permit);
                    if bound {
                        let msg = format!(
                            "Successfully assigned {}/{} to {node}",
                            pod.metadata.namespace.as_deref().unwrap_or(""),
                            pod.metadata.name.as_deref().unwrap_or("")
                        );
                        writes::event(&client, &pod, "Normal", "Scheduled", "Binding", &msg).await;
                    }
                });
            }
            Outcome::Unschedulable {
                pod,
                message,
                nominate,
                evict,
                clear,
            } => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    report_failure(&client, &pod, &message, nominate.as_deref(), &evict, &clear)
                        .await;
                });
            }
        }
    }
}

/// The decision for one pod, made on the cache under the lock.
fn decide(
    st: &mut State,
    p: &Popped,
    volume_check: Result<Vec<k8s_openapi::api::core::v1::NodeSelector>, String>,
) -> Outcome {
    let now = Instant::now();
    // The pod may have been deleted or bound while its volumes were checked.
    let Some(pod) = st.queue.pod(&p.key) else {
        return Outcome::Skip;
    };
    let info = Arc::new(PodInfo::new(pod.clone()));
    let all = st.cache.node_count();
    let volume_affinity = match volume_check {
        Ok(a) => a,
        Err(msg) => {
            st.queue.error(&p.key, now);
            let message = diagnosis::fit_error(
                all,
                Some(&msg),
                std::iter::empty(),
                Some(&diagnosis::preemption(
                    all,
                    std::iter::repeat_n(diagnosis::PREEMPTION_NOT_HELPFUL, all),
                )),
            );
            return unschedulable(pod, message, None);
        }
    };
    if all == 0 {
        st.queue.unschedulable(&p.key, HashSet::new(), now);
        return unschedulable(pod, diagnosis::NO_NODES.to_string(), None);
    }
    let cycle = Cycle::new(info.clone(), &st.cache).with_volume_affinity(volume_affinity);
    let nominated = st.nominations.for_pod(&info.uid, info.priority);
    // A pod that preempted tries its nominated node first (upstream evaluateNominatedNode).
    if let Some(nn) = st.nominations.node_of(&info.uid).map(str::to_string) {
        if let Some(node) = st.cache.node(&nn) {
            if cycle.filter(node, nominated.get(&nn)).is_ok() {
                return assume(st, info, pod, nn);
            }
        }
    }
    let start = st.next_start;
    let filtered = find_feasible(&cycle, &st.cache, start, &nominated);
    st.next_start = (start + filtered.processed) % st.cache.node_slots().len().max(1);
    if filtered.feasible.len() == 1 {
        let node = filtered.feasible[0].name().to_string();
        return assume(st, info, pod, node);
    }
    if !filtered.feasible.is_empty() {
        let scores = cycle.score(&st.cache, &filtered.feasible);
        let node = filtered.feasible[select_host(&scores)].name().to_string();
        return assume(st, info, pod, node);
    }
    // No node fits: try preemption, then report.
    let reasons: Vec<&str> = filtered
        .rejected
        .iter()
        .flat_map(|(_, r)| r.reasons())
        .collect();
    let plugins: HashSet<Plugin> = filtered.rejected.iter().map(|(_, r)| r.plugin).collect();
    let pdbs: Vec<_> = st.pdbs.values().cloned().collect();
    let post = preemption::eligible(&cycle, &st.cache)
        .and_then(|()| preemption::plan(&cycle, &st.cache, &filtered.rejected, &pdbs, &nominated));
    match post {
        Ok(plan) => {
            let message = diagnosis::fit_error(all, None, reasons.into_iter(), None);
            let clear: Vec<Arc<Pod>> = st
                .nominations
                .lower_on(&plan.node, info.priority)
                .into_iter()
                .filter_map(|uid| {
                    st.nominations.remove(&uid);
                    st.queue.pod(&uid)
                })
                .collect();
            st.nominations.set(&info, &plan.node);
            st.queue.unschedulable(&p.key, plugins, now);
            tracing::info!(pod = info.name(), node = %plan.node, victims = plan.victims.len(), "preempting");
            Outcome::Unschedulable {
                pod,
                message,
                nominate: Some(plan.node),
                evict: plan
                    .victims
                    .iter()
                    .map(|v| {
                        Arc::new(Pod {
                            metadata: v.object_meta(),
                            ..Pod::default()
                        })
                    })
                    .collect(),
                clear,
            }
        }
        Err(post) => {
            let message = diagnosis::fit_error(all, None, reasons.into_iter(), Some(&post));
            st.queue.unschedulable(&p.key, plugins, now);
            unschedulable(pod, message, None)
        }
    }
}

fn unschedulable(pod: Arc<Pod>, message: String, nominate: Option<String>) -> Outcome {
    Outcome::Unschedulable {
        pod,
        message,
        nominate,
        evict: Vec::new(),
        clear: Vec::new(),
    }
}

fn assume(st: &mut State, info: Arc<PodInfo>, pod: Arc<Pod>, node: String) -> Outcome {
    st.nominations.remove(&info.uid);
    st.cache.assume(info, &node);
    Outcome::Bind { pod, node }
}

/// Bind; true when bound. A failure forgets the assumption and backs the pod off.
async fn bind(
    client: &Client,
    shared: &Shared,
    key: &str,
    pod: &Pod,
    node: &str,
    select: &[String],
) -> bool {
    // PreBind first: a claim waiting for its consumer learns the node before the pod lands.
    let written = match volumes::select_node(client, pod, node, select).await {
        Ok(()) => writes::bind(client, pod, node).await.map_err(|e| (e, true)),
        Err(e) => Err((e, false)),
    };
    match written {
        Ok(()) => {
            shared.lock().queue.delete(key);
            shared
                .bound
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
        Err((e, binding)) => {
            let gone =
                binding && matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            tracing::warn!(error = %e, pod = pod.metadata.name.as_deref().unwrap_or(""), node, "binding failed");
            {
                let mut st = shared.lock();
                let now = Instant::now();
                st.cache.forget(key);
                if gone {
                    // Deleted, or bound by someone else: the watch brings the truth.
                    st.queue.delete(key);
                } else {
                    st.queue.error(key, now);
                }
                // The room it held is free again.
                st.queue.on_event(Event::AssignedPodDeleted, now);
            }
            shared.wake.notify_one();
            if !gone {
                let msg = format!("Binding rejected: {e}");
                writes::event(
                    client,
                    pod,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    &msg,
                )
                .await;
            }
            false
        }
    }
}

async fn report_failure(
    client: &Client,
    pod: &Pod,
    message: &str,
    nominate: Option<&str>,
    evict: &[Arc<Pod>],
    clear: &[Arc<Pod>],
) {
    for v in evict {
        if let Err(e) = writes::evict(client, v, pod, nominate.unwrap_or("")).await {
            tracing::warn!(error = %e, victim = v.metadata.name.as_deref().unwrap_or(""), "preemption could not delete a victim");
        }
    }
    for c in clear {
        if let Err(e) = writes::clear_nomination(client, c).await {
            tracing::debug!(error = %e, "could not clear a nomination");
        }
    }
    writes::event(
        client,
        pod,
        "Warning",
        "FailedScheduling",
        "Scheduling",
        message,
    )
    .await;
    if !writes::condition_is(pod, message, nominate) {
        if let Err(e) = writes::set_unschedulable(client, pod, message, nominate).await {
            tracing::debug!(error = %e, pod = pod.metadata.name.as_deref().unwrap_or(""), "could not update the PodScheduled condition");
        }
    }
}
