//! One pod's worker: it owns the pod's containers on this node. Each pass (`sync`) moves the
//! pod one step toward its spec — sandbox, volumes, init containers in order (sidecars kept
//! running), app containers, restarts after back-off — then writes the status it observed.
//! It wakes on a new version of the pod, a container exit, or a back-off timer; deletion
//! stops the containers within the grace period and ends with the kubelet's final DELETE.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use capstan_events::EventType;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::container_spec::{self, ManagedFiles};
use super::env::{self, Sources};
use super::probes::{self, Action, ProbeKind, Target, Verdict};
use super::service_account_token::PodTokens;
use super::service_env;
use super::slot::{Kind, Slot, Terminated};
use super::source_watches::{self, Subscription};
use super::status::{self, Phase, Transitions};
use super::volumes::{self, Prepared};
use super::Shared;
use crate::runtime::{ContainerRecord, ContainerSpec, ContainerState, SandboxInfo, SandboxSpec};

/// Volumes (configMap, secret …) are re-projected when their sources change (watched), and
/// at least this often besides, as the kubelet's periodic sync.
const VOLUME_RESYNC: Duration = Duration::from_secs(60);

/// A pod's labels and annotations (what downwardAPI files may show).
type PodMeta = (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
);

pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    namespace: String,
    name: String,
    slots: Vec<Slot>,
    sandbox: Option<SandboxInfo>,
    volumes: BTreeMap<String, Prepared>,
    volumes_at: Option<Instant>,
    /// Set when a watched volume source changed: the volumes are projected again.
    volumes_stale: bool,
    /// The labels and annotations the downwardAPI files were last written from.
    volumes_meta: Option<PodMeta>,
    /// Woken by the watches of the pod's volume sources.
    volume_notify: Arc<Notify>,
    volume_sources: Option<Subscription>,
    /// The pod's service-account tokens, made on the first volume setup.
    tokens: Option<PodTokens>,
    managed: Option<ManagedFiles>,
    start_time: SystemTime,
    transitions: Transitions,
    written: Option<Value>,
    phase: Phase,
    init_failed: bool,
    deadline_exceeded: bool,
    exits_tx: mpsc::UnboundedSender<String>,
    exits_rx: mpsc::UnboundedReceiver<String>,
    sandbox_error: Option<String>,
    initialized: bool,
    /// Containers whose terminationMessagePolicy is FallbackToLogsOnError.
    fallback_to_logs: Vec<String>,
    /// Probe loops of each running container (by runtime id).
    probes: HashMap<String, Vec<JoinHandle<()>>>,
    verdict_tx: mpsc::UnboundedSender<Verdict>,
    verdict_rx: mpsc::UnboundedReceiver<Verdict>,
    /// The pod's own address on the pod network.
    pod_ip: Option<String>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, pod: &Pod, found: Vec<ContainerRecord>) -> Worker {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (verdict_tx, verdict_rx) = mpsc::unbounded_channel();
        let meta = &pod.metadata;
        let mut slots = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in spec.init_containers.iter().flatten() {
                let kind = if c.restart_policy.as_deref() == Some("Always") {
                    Kind::Sidecar
                } else {
                    Kind::Init
                };
                slots.push(Slot::new(&c.name, kind, c.image.as_deref().unwrap_or("")));
            }
            for c in &spec.containers {
                slots.push(Slot::new(
                    &c.name,
                    Kind::App,
                    c.image.as_deref().unwrap_or(""),
                ));
            }
            // Here too, so a restarted agent adopts what already ran instead of starting
            // a second one.
            for c in spec.ephemeral_containers.iter().flatten() {
                slots.push(Slot::new(
                    &c.name,
                    Kind::Ephemeral,
                    c.image.as_deref().unwrap_or(""),
                ));
            }
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(SystemTime::now, |t| SystemTime::from(t.0));
        let mut w = Worker {
            shared,
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            slots,
            sandbox: None,
            volumes: BTreeMap::new(),
            volumes_at: None,
            volumes_stale: false,
            volumes_meta: None,
            volume_notify: Arc::new(Notify::new()),
            volume_sources: None,
            tokens: None,
            managed: None,
            start_time,
            transitions: Transitions::default(),
            written: None,
            phase: Phase::Pending,
            init_failed: false,
            deadline_exceeded: false,
            exits_tx,
            exits_rx,
            sandbox_error: None,
            initialized: false,
            fallback_to_logs: pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.init_containers
                        .iter()
                        .flatten()
                        .chain(s.containers.iter())
                })
                .filter(|c| {
                    c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
                })
                .map(|c| c.name.clone())
                .collect(),
            probes: HashMap::new(),
            verdict_tx,
            verdict_rx,
            pod_ip: None,
        };
        // A pod that finished never runs again, whatever a restarted agent finds on disk.
        w.phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Pending,
        };
        w.initialized = w.phase.terminal();
        w.adopt(found);
        w
    }

    /// Containers a previous agent started are taken over, not restarted.
    fn adopt(&mut self, mut found: Vec<ContainerRecord>) {
        found.sort_by_key(attempt_of);
        for record in found {
            let Some(name) = record.labels.get(LABEL_CONTAINER).cloned() else {
                continue;
            };
            let attempt = attempt_of(&record);
            let Some(slot) = self.slots.iter_mut().find(|s| s.name == name) else {
                continue;
            };
            if let Some(prev) = slot.terminated.take() {
                slot.last = Some(prev);
            }
            slot.run = Some((attempt, record.id.clone()));
            slot.restarts = attempt;
            slot.waiting = None;
            slot.image_id = record
                .labels
                .get(LABEL_IMAGE_ID)
                .cloned()
                .unwrap_or_default();
            if let ContainerState::Exited { .. } = record.state {
                slot.terminated = Some(self_terminated(&record.id, &record.state, String::new()));
            } else {
                let tx = self.exits_tx.clone();
                let rt = self.shared.runtime.clone();
                let id = record.id.clone();
                tokio::spawn(async move {
                    let _ = rt.wait(&id).await;
                    let _ = tx.send(id);
                });
            }
            slot.state = Some(record.state.clone());
        }
    }

    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        loop {
            let pod = rx.borrow_and_update().clone();
            let Some(pod) = pod else {
                // Gone from the API without our final DELETE (forced): stop at once.
                self.teardown(None, Duration::from_secs(1)).await;
                return;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| {
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30)
                    .max(0) as u64;
                self.teardown(Some(&pod), Duration::from_secs(grace)).await;
                self.delete(&pod).await;
                return;
            }
            let wake = self.sync(&pod).await;
            self.write_status(&pod).await;
            let sleep = async {
                match wake {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                Some(_) = self.exits_rx.recv() => {}
                Some(v) = self.verdict_rx.recv() => self.on_verdict(&pod, v).await,
                _ = self.volume_notify.notified() => self.volumes_stale = true,
                _ = sleep => {}
            }
        }
    }

    /// One step toward the spec; returns when the next timed step is due.
    async fn sync(&mut self, pod: &Pod) -> Option<Duration> {
        let spec = pod.spec.clone()?;
        self.refresh_states().await;
        if self.phase.terminal() {
            return None;
        }
        self.ensure_probes(pod);
        let now = Instant::now();
        let mut wake: Option<Duration> = None;
        let soon = |d: Duration, wake: &mut Option<Duration>| {
            *wake = Some(wake.map_or(d, |w| w.min(d)));
        };
        if let Some(deadline) = spec
            .active_deadline_seconds
            .and_then(|s| u64::try_from(s).ok())
        {
            let elapsed = SystemTime::now()
                .duration_since(self.start_time)
                .unwrap_or_default();
            let deadline = Duration::from_secs(deadline);
            if elapsed >= deadline {
                self.deadline_exceeded = true;
                self.phase = Phase::Failed;
                let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
                self.stop_all(pod, Duration::from_secs(grace)).await;
                self.event(
                    pod,
                    EventType::Warning,
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )
                .await;
                return None;
            }
            soon(deadline - elapsed, &mut wake);
        }
        if self.sandbox.is_none() {
            let made = match self
                .shared
                .runtime
                .ensure_sandbox(&self.sandbox_spec(pod))
                .await
            {
                Ok(info) => self.attach_network(pod, &info).await.map(|ip| (info, ip)),
                Err(e) => Err(e.to_string()),
            };
            match made {
                Ok((info, ip)) => {
                    self.sandbox = Some(info);
                    self.pod_ip = ip;
                    self.sandbox_error = None;
                }
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {e}");
                    if self.sandbox_error.as_deref() != Some(msg.as_str()) {
                        self.event(pod, EventType::Warning, "FailedCreatePodSandBox", &msg)
                            .await;
                        self.sandbox_error = Some(msg);
                    }
                    soon(Duration::from_secs(5), &mut wake);
                    return wake;
                }
            }
        }
        let Some(sandbox) = self.sandbox.clone() else {
            return wake;
        };
        let meta = (
            pod.metadata.labels.clone(),
            pod.metadata.annotations.clone(),
        );
        let token_due = self
            .tokens
            .as_ref()
            .and_then(PodTokens::next_refresh)
            .is_some_and(|d| d.is_zero());
        if self.volumes_stale
            || token_due
            || self.volumes_meta.as_ref() != Some(&meta)
            || self
                .volumes_at
                .is_none_or(|t| now.duration_since(t) >= VOLUME_RESYNC)
        {
            if self.volume_sources.is_none() {
                // Before reading them, so no change after the read goes unseen.
                let keys = source_watches::volume_sources(pod);
                if !keys.is_empty() {
                    self.volume_sources = Some(
                        self.shared
                            .source_watches
                            .subscribe(keys, self.volume_notify.clone()),
                    );
                }
            }
            self.volumes_stale = false;
            let mut sources = Sources::new(self.shared.client.clone(), &self.namespace);
            match volumes::setup(
                pod,
                &sandbox.pod_dir,
                &self.shared.node.host_ip,
                &mut sources,
                self.tokens
                    .get_or_insert_with(|| PodTokens::new(self.shared.client.clone(), pod)),
            )
            .await
            {
                Ok(v) => {
                    self.volumes = v;
                    self.volumes_at = Some(now);
                    self.volumes_meta = Some(meta);
                }
                Err(e) => {
                    self.event(pod, EventType::Warning, "FailedMount", &e.to_string())
                        .await;
                    self.volumes_at = None;
                    soon(Duration::from_secs(5), &mut wake);
                    if self.slots.iter().all(|s| s.run.is_none()) {
                        return wake;
                    }
                }
            }
        }
        // Projected files are re-read at the periodic sync, and tokens renewed when due.
        if self.volumes.values().any(|v| v.read_only) {
            let since = self
                .volumes_at
                .map_or(Duration::ZERO, |t| now.duration_since(t));
            soon(VOLUME_RESYNC.saturating_sub(since), &mut wake);
            if let Some(d) = self.tokens.as_ref().and_then(PodTokens::next_refresh) {
                soon(d, &mut wake);
            }
        }
        if self.managed.is_none() {
            let hostname = hostname_of(pod);
            let ip = self.pod_ip(pod);
            let resolv = super::resolv_conf::render(
                pod,
                &crate::dns::HostResolvConf::read(),
                self.cluster_dns().await,
            );
            match container_spec::write_managed_files(
                pod,
                &sandbox.pod_dir,
                &hostname,
                ip.as_deref(),
                &resolv,
            ) {
                Ok(m) => self.managed = Some(m),
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "writing /etc/hosts and friends failed");
                    soon(Duration::from_secs(5), &mut wake);
                    return wake;
                }
            }
        }
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Init containers, in order: each must succeed before the next; sidecars must run.
        let mut initialized = true;
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        for c in &inits {
            let Some(i) = self.slot_index(&c.name) else {
                continue;
            };
            let kind = self.slots[i].kind;
            if kind == Kind::Init
                && self.slots[i].exited().is_some_and(|t| t.exit_code == 0)
                && !self.slots[i].running()
            {
                continue;
            }
            if let Some(d) = self.advance(pod, c, i, &policy).await {
                soon(d, &mut wake);
            }
            if kind == Kind::Sidecar && self.slots[i].running() {
                continue;
            }
            if kind == Kind::Init
                && policy == "Never"
                && self.slots[i].exited().is_some_and(|t| t.exit_code != 0)
            {
                self.init_failed = true;
            }
            initialized = false;
            break;
        }
        if initialized {
            for c in spec.containers.clone() {
                let Some(i) = self.slot_index(&c.name) else {
                    continue;
                };
                if let Some(d) = self.advance(pod, &c, i, &policy).await {
                    soon(d, &mut wake);
                }
            }
        }
        // Ephemeral containers join a pod that runs; each starts once (policy Never).
        if initialized && !self.phase.terminal() {
            for c in ephemeral_containers(pod) {
                let i = match self.slot_index(&c.name) {
                    Some(i) => i,
                    None => {
                        self.slots.push(Slot::new(
                            &c.name,
                            Kind::Ephemeral,
                            c.image.as_deref().unwrap_or(""),
                        ));
                        self.slots.len() - 1
                    }
                };
                if self.slots[i].kind != Kind::Ephemeral {
                    continue;
                }
                if let Some(d) = self.advance(pod, &c, i, "Never").await {
                    soon(d, &mut wake);
                }
            }
        }
        self.phase = status::phase(&self.slots, initialized, self.init_failed, &policy);
        if self.phase.terminal() {
            // The pod is done: its sidecars stop too (reverse order), as upstream.
            let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
            self.stop_all(pod, Duration::from_secs(grace)).await;
        }
        self.initialized = initialized;
        wake
    }

    /// One container: start it if it never ran, restart it after its back-off when the
    /// policy says so. Returns when to look again.
    async fn advance(
        &mut self,
        pod: &Pod,
        c: &Container,
        i: usize,
        policy: &str,
    ) -> Option<Duration> {
        let now = Instant::now();
        if self.slots[i].running() {
            return None;
        }
        if let Some(t) = self.slots[i].exited().cloned() {
            if !status::restarts(policy, self.slots[i].kind, t.exit_code) {
                self.slots[i].waiting = None;
                return None;
            }
            if let Err(wait) = self.slots[i].ready_to_start(now) {
                let delay = self.slots[i].backoff_shown();
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    human(delay),
                    c.name,
                    self.name,
                    self.namespace,
                    self.uid
                );
                if self.slots[i].waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff")
                {
                    let note = format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        c.name, self.name, self.namespace, self.uid
                    );
                    self.event(pod, EventType::Warning, "BackOff", &note).await;
                }
                self.slots[i].waiting = Some(("CrashLoopBackOff".into(), msg));
                return Some(wait);
            }
        } else if let Err(wait) = self.slots[i].ready_to_start(now) {
            // Between pull attempts the container shows ImagePullBackOff, as upstream.
            if self.slots[i]
                .waiting
                .as_ref()
                .is_some_and(|w| w.0 == "ErrImagePull")
            {
                let msg = format!(
                    "Back-off pulling image \"{}\"",
                    c.image.as_deref().unwrap_or("")
                );
                self.event(pod, EventType::Normal, "BackOff", &msg).await;
                self.slots[i].waiting = Some(("ImagePullBackOff".into(), msg));
            }
            return Some(wait);
        }
        self.start(pod, c, i).await
    }

    async fn start(&mut self, pod: &Pod, c: &Container, i: usize) -> Option<Duration> {
        let now = Instant::now();
        let Some(sandbox) = self.sandbox.clone() else {
            return Some(Duration::from_secs(1));
        };
        let Some(managed) = self.managed.clone() else {
            return Some(Duration::from_secs(1));
        };
        let reference = c.image.clone().unwrap_or_default();
        let image = match self.ensure_image(pod, c, &reference, i).await {
            Ok(img) => img,
            Err(wait) => return Some(wait),
        };
        let layers = match self.shared.images.layers(&image).await {
            Ok(l) => l,
            Err(e) => {
                self.config_error(
                    pod,
                    i,
                    "ErrImagePull",
                    &format!("unpacking image {reference:?}: {e}"),
                )
                .await;
                return Some(self.slots[i].current_delay(now));
            }
        };
        let mut sources = Sources::new(self.shared.client.clone(), &self.namespace);
        let host_ip = self.shared.node.host_ip.clone();
        let pod_ip = self.pod_ip(pod);
        let env = match self.service_env(pod).await {
            Ok(service_env) => {
                env::build(
                    pod,
                    c,
                    &image.config.env,
                    &host_ip,
                    pod_ip.as_deref(),
                    service_env,
                    &mut sources,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let env = match env {
            Ok(e) => e,
            Err(e) => {
                self.config_error(pod, i, "CreateContainerConfigError", &e.0)
                    .await;
                return Some(self.slots[i].current_delay(now));
            }
        };
        let attempt = self.slots[i].next_attempt();
        // `kubectl debug --target`: the process namespace of the target's running process.
        let target_pid_ns = ephemeral_target(pod, &c.name)
            .and_then(|t| self.slot_index(&t))
            .and_then(|t| match self.slots[t].state {
                Some(ContainerState::Running { pid, .. }) => {
                    Some(PathBuf::from(format!("/proc/{pid}/ns/pid")))
                }
                _ => None,
            });
        let termination_log = sandbox
            .pod_dir
            .join("containers")
            .join(&c.name)
            .join(format!("{attempt}.termination-log"));
        let built = (|| -> Result<ContainerSpec, container_spec::ConfigError> {
            if let Some(parent) = termination_log.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| container_spec::ConfigError(e.to_string()))?;
            }
            std::fs::write(&termination_log, b"")
                .map_err(|e| container_spec::ConfigError(e.to_string()))?;
            let argv = container_spec::argv(c, &image.config, &env)?;
            let security = container_spec::security(pod, c, &image.config, &layers)?;
            let mounts = container_spec::mounts(c, &self.volumes, &managed, &termination_log)?;
            let mut labels = BTreeMap::new();
            labels.insert(LABEL_CONTAINER.to_string(), c.name.clone());
            labels.insert(LABEL_ATTEMPT.to_string(), attempt.to_string());
            labels.insert(LABEL_POD_NAME.to_string(), self.name.clone());
            labels.insert(LABEL_POD_NAMESPACE.to_string(), self.namespace.clone());
            labels.insert(LABEL_POD_UID.to_string(), self.uid.clone());
            labels.insert(LABEL_IMAGE_ID.to_string(), image_id(&image));
            Ok(ContainerSpec {
                id: container_id(&self.uid, &c.name, attempt),
                pod_uid: self.uid.clone(),
                container_name: c.name.clone(),
                attempt,
                layers: layers.clone(),
                argv,
                env: env.clone(),
                working_dir: c
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .or_else(|| Some(image.config.working_dir.clone()).filter(|w| !w.is_empty()))
                    .unwrap_or_else(|| "/".into()),
                security,
                mounts,
                resources: container_spec::resources(c),
                hostname: hostname_of(pod),
                log_path: crate::logs::container_log_path(
                    &self.shared.runtime.config().pods_root,
                    &self.uid,
                    &c.name,
                    attempt,
                ),
                labels,
                stdin: c.stdin.unwrap_or(false),
                stdin_once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
                pid_ns: target_pid_ns.clone(),
            })
        })();
        let spec = match built {
            Ok(s) => s,
            Err(e) => {
                self.config_error(pod, i, "CreateContainerConfigError", &e.0)
                    .await;
                return Some(self.slots[i].current_delay(now));
            }
        };
        let id = spec.id.clone();
        // The previous run's end becomes lastState; its container is no longer needed.
        let slot = &mut self.slots[i];
        if let Some(prev) = slot.terminated.take() {
            if let Some((_, old)) = &slot.run {
                let rt = self.shared.runtime.clone();
                let old = old.clone();
                tokio::spawn(async move {
                    if let Err(e) = rt.remove(&old).await {
                        tracing::debug!(container = %old, error = %e, "removing an exited container");
                    }
                });
            }
            slot.last = Some(prev);
            slot.restarts += 1;
        }
        slot.run = Some((attempt, id.clone()));
        slot.image_id = image_id(&image);
        slot.waiting = Some(("ContainerCreating".into(), String::new()));
        let started_call = Instant::now();
        match self.shared.runtime.start_container(&sandbox, &spec).await {
            Ok(()) => {
                self.event(
                    pod,
                    EventType::Normal,
                    "Created",
                    &format!("Created container {}", c.name),
                )
                .await;
                self.event(
                    pod,
                    EventType::Normal,
                    "Started",
                    &format!("Started container {}", c.name),
                )
                .await;
                let state = self.shared.runtime.state(&id).await.ok();
                let slot = &mut self.slots[i];
                slot.waiting = None;
                slot.state = state.or(Some(ContainerState::Running {
                    pid: 0,
                    started_at: SystemTime::now(),
                }));
                tracing::info!(pod = %self.key(), container = %c.name, attempt, elapsed_ms = started_call.elapsed().as_millis() as u64, "container started");
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                    let action = hook_action(hook);
                    let target = self.target(c);
                    if let Err(message) = probes::run_action(
                        &self.shared.runtime,
                        &id,
                        &action,
                        &target,
                        Duration::from_secs(30),
                    )
                    .await
                    {
                        let note = format!("PostStartHook failed: {message}");
                        self.event(pod, EventType::Warning, "FailedPostStartHook", &note)
                            .await;
                        let grace = grace_of(pod);
                        let _ = self.shared.runtime.stop(&id, grace).await;
                    }
                }
                let tx = self.exits_tx.clone();
                let rt = self.shared.runtime.clone();
                tokio::spawn(async move {
                    let _ = rt.wait(&id).await;
                    let _ = tx.send(id);
                });
                None
            }
            Err(e) => {
                let message = e.to_string();
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                )
                .await;
                let slot = &mut self.slots[i];
                slot.waiting = None;
                slot.state = Some(ContainerState::Exited {
                    exit_code: 128,
                    oom_killed: false,
                    started_at: None,
                    finished_at: SystemTime::now(),
                });
                slot.terminated = Some(Terminated {
                    exit_code: 128,
                    reason: "StartError".into(),
                    message,
                    started_at: None,
                    finished_at: SystemTime::now(),
                    container_id: format!("capstan://{id}"),
                });
                slot.schedule_restart(Instant::now(), None);
                Some(Duration::ZERO)
            }
        }
    }

    /// The image, present or pulled; on failure the slot waits with upstream's reasons.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        reference: &str,
        i: usize,
    ) -> Result<crate::images::Image, Duration> {
        let now = Instant::now();
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into());
        let present = match self.shared.images.resolve(reference) {
            Ok(p) => p,
            Err(e) => {
                self.config_error(
                    pod,
                    i,
                    "InvalidImageName",
                    &format!("Failed to apply default image tag {reference:?}: {e}"),
                )
                .await;
                return Err(self.slots[i].current_delay(now));
            }
        };
        // `Always` asks the registry again for a name that came from one (the tag may have
        // moved; blobs already here are not fetched again). A name imported from an archive
        // is the node's air-gap image (as k3s's): it is used as it is.
        let ask_registry = policy == "Always"
            && present.as_ref().is_some_and(|img| {
                crate::images::normalize(reference)
                    .is_ok_and(|name| img.pulled_names.contains(&name))
            });
        if let Some(img) = present.filter(|_| !ask_registry) {
            if self.slots[i].run.is_none() {
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{reference}\" already present on machine"),
                )
                .await;
            }
            return Ok(img);
        }
        if policy == "Never" {
            let msg =
                format!("Container image \"{reference}\" is not present with pull policy of Never");
            self.config_error(pod, i, "ErrImageNeverPull", &msg).await;
            return Err(self.slots[i].current_delay(now));
        }
        self.event(
            pod,
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{reference}\""),
        )
        .await;
        let auth = super::pull_secrets::auth_for(&self.shared.client, pod, reference).await;
        let t = Instant::now();
        match self.shared.images.pull(reference, &auth).await {
            Ok(img) => {
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{reference}\" in {:.3}s",
                        t.elapsed().as_secs_f64()
                    ),
                )
                .await;
                self.slots[i].backoff = Duration::ZERO;
                Ok(img)
            }
            Err(e) => {
                let msg = format!("Failed to pull image \"{reference}\": {e}");
                self.event(pod, EventType::Warning, "Failed", &msg).await;
                self.event(pod, EventType::Warning, "Failed", "Error: ErrImagePull")
                    .await;
                self.slots[i].waiting = Some(("ErrImagePull".into(), msg));
                self.slots[i].schedule_retry(Instant::now());
                Err(self.slots[i].current_delay(Instant::now()))
            }
        }
    }

    async fn config_error(&mut self, pod: &Pod, i: usize, reason: &str, message: &str) {
        let changed = self.slots[i]
            .waiting
            .as_ref()
            .is_none_or(|w| w.0 != reason || w.1 != message);
        if changed {
            self.event(
                pod,
                EventType::Warning,
                "Failed",
                &format!("Error: {message}"),
            )
            .await;
        }
        self.slots[i].waiting = Some((reason.to_string(), message.to_string()));
        self.slots[i].schedule_retry(Instant::now());
    }

    /// Reads the runtime's view of every running container; an exit becomes `terminated`.
    async fn refresh_states(&mut self) {
        let pods_root = self.shared.runtime.config().pods_root.clone();
        for i in 0..self.slots.len() {
            let Some((attempt, id)) = self.slots[i].run.clone() else {
                continue;
            };
            if self.slots[i].terminated.is_some() {
                continue;
            }
            let Ok(state) = self.shared.runtime.state(&id).await else {
                continue;
            };
            if let ContainerState::Exited { started_at, .. } = &state {
                let name = self.slots[i].name.clone();
                let log = crate::logs::container_log_path(&pods_root, &self.uid, &name, attempt);
                let file = self.sandbox.as_ref().map(|s| {
                    s.pod_dir
                        .join("containers")
                        .join(&name)
                        .join(format!("{attempt}.termination-log"))
                });
                let fallback = self.fallback_to_logs.contains(&name);
                let message = termination_message(&log, file, fallback, &state);
                let t = self_terminated(&id, &state, message);
                self.stop_probes(&id);
                let ran_for = started_at.and_then(|s| t.finished_at.duration_since(s).ok());
                self.slots[i].terminated = Some(t);
                self.slots[i].schedule_restart(Instant::now(), ran_for);
            }
            self.slots[i].state = Some(state);
        }
    }

    async fn stop_all(&mut self, pod: &Pod, grace: Duration) {
        // App containers first, then sidecars and init containers in reverse order.
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].kind == Kind::App)
            .collect();
        order.extend(
            (0..self.slots.len())
                .filter(|i| self.slots[*i].kind != Kind::App)
                .rev(),
        );
        let mut running = Vec::new();
        for i in order {
            if self.slots[i].running() {
                if let Some((_, id)) = self.slots[i].run.clone() {
                    running.push((i, id));
                }
            }
        }
        for (i, _) in &running {
            let note = format!("Stopping container {}", self.slots[*i].name);
            self.event(pod, EventType::Normal, "Killing", &note).await;
        }
        let containers = all_containers(pod);
        let stops = running.iter().map(|(i, id)| {
            let rt = self.shared.runtime.clone();
            let id = id.clone();
            let spec = containers
                .iter()
                .find(|c| c.name == self.slots[*i].name)
                .cloned();
            let target = spec.as_ref().map(|c| self.target(c));
            async move {
                let begun = Instant::now();
                let mut failed = None;
                // preStop runs first, within the grace period; what is left goes to SIGTERM.
                if let (Some(c), Some(target)) = (&spec, &target) {
                    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                        let action = hook_action(hook);
                        let run = probes::run_action(&rt, &id, &action, target, grace);
                        match tokio::time::timeout(grace, run).await {
                            Ok(Err(m)) => failed = Some(format!("PreStopHook failed: {m}")),
                            Err(_) => {
                                failed =
                                    Some(format!("PreStopHook did not finish within {grace:?}"))
                            }
                            Ok(Ok(())) => {}
                        }
                    }
                }
                let left = grace.saturating_sub(begun.elapsed());
                (rt.stop(&id, left).await, failed)
            }
        });
        for (r, failed) in futures::future::join_all(stops).await {
            if let Some(note) = failed {
                self.event(pod, EventType::Warning, "FailedPreStopHook", &note)
                    .await;
            }
            if let Err(e) = r {
                tracing::warn!(pod = %self.key(), error = %e, "stopping a container failed");
            }
        }
        let ids: Vec<String> = running.iter().map(|(_, id)| id.clone()).collect();
        for id in ids {
            self.stop_probes(&id);
        }
        self.refresh_states().await;
        for s in &mut self.slots {
            if s.terminated.is_some() {
                s.waiting = None;
            }
        }
    }

    /// Stops every container within `grace`, removes them and the sandbox.
    async fn teardown(&mut self, pod: Option<&Pod>, grace: Duration) {
        if let Some(pod) = pod {
            self.stop_all(pod, grace).await;
        } else {
            let ids: Vec<String> = self
                .slots
                .iter()
                .filter_map(|s| s.run.as_ref().map(|r| r.1.clone()))
                .collect();
            for id in ids {
                let _ = self.shared.runtime.stop(&id, grace).await;
            }
        }
        let records = self.shared.runtime.list().await.unwrap_or_default();
        for r in records.into_iter().filter(|r| r.pod_uid == self.uid) {
            if !matches!(r.state, ContainerState::Exited { .. }) {
                let _ = self
                    .shared
                    .runtime
                    .stop(&r.id, Duration::from_secs(1))
                    .await;
            }
            if let Err(e) = self.shared.runtime.remove(&r.id).await {
                tracing::warn!(pod = %self.key(), container = %r.id, error = %e, "removing a container failed");
            }
        }
        if let (Some(pod), Some(sb)) = (pod, &self.sandbox) {
            volumes::teardown(pod, &sb.pod_dir);
        }
        if let Some(nf) = &self.shared.netfilter {
            if let Err(e) = nf.remove_host_ports(&self.uid).await {
                tracing::warn!(pod = %self.key(), error = %e, "removing the pod's hostPort rules failed");
            }
        }
        if let Some(net) = &self.shared.network {
            if let Err(e) = net.detach(&self.uid).await {
                tracing::warn!(pod = %self.key(), error = %e, "removing the pod's network failed");
            }
        }
        if let Err(e) = self.shared.runtime.remove_sandbox(&self.uid).await {
            tracing::warn!(pod = %self.key(), error = %e, "removing the pod sandbox failed");
        }
    }

    /// The kubelet's final DELETE: grace 0, only this incarnation (uid precondition).
    async fn delete(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..5u32 {
            match api.delete(&self.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, attempt, "final delete failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    async fn write_status(&mut self, pod: &Pod) {
        // A pod that had finished before this agent started keeps the status it has.
        if self.phase.terminal() && self.slots.iter().all(|s| s.run.is_none()) {
            return;
        }
        let qos = match container_spec::qos_class(pod) {
            crate::runtime::QosClass::Guaranteed => "Guaranteed",
            crate::runtime::QosClass::Burstable => "Burstable",
            crate::runtime::QosClass::BestEffort => "BestEffort",
        };
        let pod_ip = self.pod_ip(pod);
        let reason = self.deadline_exceeded.then_some((
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        ));
        let body = status::render(
            &self.uid,
            &status::View {
                slots: &self.slots,
                phase: self.phase,
                sandbox_ready: self.sandbox.is_some(),
                initialized: self.initialized,
                host_ip: &self.shared.node.host_ip,
                pod_ip: pod_ip.as_deref(),
                start_time: self.start_time,
                qos,
                reason,
            },
            &mut self.transitions,
        );
        if self.written.as_ref() == Some(&body) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(&body),
            )
            .await
        {
            Ok(_) => self.written = Some(body),
            Err(kube::Error::Api(s)) if s.code == 404 => self.written = Some(body),
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "writing pod status failed"),
        }
    }

    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        self.shared
            .recorder
            .record_ref(reference, type_, reason, note)
            .await;
    }

    /// Starts the probe loops of running containers that have none yet (a new run, or one
    /// adopted after an agent restart).
    fn ensure_probes(&mut self, pod: &Pod) {
        let containers = all_containers(pod);
        for i in 0..self.slots.len() {
            if !self.slots[i].running() {
                continue;
            }
            let Some((_, id)) = self.slots[i].run.clone() else {
                continue;
            };
            if self.probes.contains_key(&id) {
                continue;
            }
            let Some(c) = containers.iter().find(|c| c.name == self.slots[i].name) else {
                continue;
            };
            let target = self.target(c);
            let mut loops = Vec::new();
            let kinds = [
                (ProbeKind::Startup, c.startup_probe.clone()),
                (ProbeKind::Liveness, c.liveness_probe.clone()),
                (ProbeKind::Readiness, c.readiness_probe.clone()),
            ];
            let slot = &mut self.slots[i];
            slot.has_startup = c.startup_probe.is_some();
            slot.has_readiness = c.readiness_probe.is_some();
            slot.startup_ok = false;
            slot.readiness = None;
            for (kind, probe) in kinds {
                let Some(probe) = probe else { continue };
                loops.push(tokio::spawn(probes::probe_loop(
                    self.shared.runtime.clone(),
                    id.clone(),
                    kind,
                    probe,
                    target.clone(),
                    self.verdict_tx.clone(),
                )));
            }
            self.probes.insert(id, loops);
        }
    }

    fn stop_probes(&mut self, id: &str) {
        for task in self.probes.remove(id).into_iter().flatten() {
            task.abort();
        }
    }

    async fn on_verdict(&mut self, pod: &Pod, v: Verdict) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.run.as_ref().is_some_and(|r| r.1 == v.container_id))
        else {
            return;
        };
        if !self.slots[i].running() {
            return;
        }
        if let Some(message) = &v.failure {
            let note = format!("{} probe failed: {message}", v.kind.as_str());
            self.event(pod, EventType::Warning, "Unhealthy", &note)
                .await;
        }
        let name = self.slots[i].name.clone();
        match v.kind {
            ProbeKind::Readiness => self.slots[i].readiness = v.state,
            ProbeKind::Startup => {
                if v.state == Some(true) {
                    self.slots[i].startup_ok = true;
                } else if v.state == Some(false) {
                    let note = format!("Container {name} failed startup probe, will be restarted");
                    self.kill_for_probe(pod, i, &note).await;
                }
            }
            ProbeKind::Liveness => {
                // Liveness counts only once the startup probe passed.
                if v.state == Some(false) && self.slots[i].started() {
                    let note = format!("Container {name} failed liveness probe, will be restarted");
                    self.kill_for_probe(pod, i, &note).await;
                }
            }
        }
    }

    async fn kill_for_probe(&mut self, pod: &Pod, i: usize, note: &str) {
        let Some((_, id)) = self.slots[i].run.clone() else {
            return;
        };
        self.stop_probes(&id);
        self.event(pod, EventType::Normal, "Killing", note).await;
        let grace = grace_of(pod);
        if let Err(e) = self.shared.runtime.stop(&id, grace).await {
            tracing::warn!(pod = %self.key(), error = %e, "stopping an unhealthy container failed");
        }
    }

    fn target(&self, c: &Container) -> Target {
        Target {
            net_ns: self.sandbox.as_ref().and_then(|s| s.net_ns.clone()),
            host_ip: self
                .shared
                .node
                .host_ip
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                .collect(),
        }
    }

    fn sandbox_spec(&self, pod: &Pod) -> SandboxSpec {
        let spec = pod.spec.as_ref();
        SandboxSpec {
            pod_uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            hostname: hostname_of(pod),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            share_process_namespace: spec
                .and_then(|s| s.share_process_namespace)
                .unwrap_or(false),
            resources: container_spec::pod_resources(pod),
            qos: container_spec::qos_class(pod),
        }
    }

    /// A host-network pod has the node's address; others their own on the pod network.
    fn pod_ip(&self, pod: &Pod) -> Option<String> {
        let host = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if host {
            Some(self.shared.node.host_ip.clone())
        } else {
            self.pod_ip.clone()
        }
    }

    /// Wires the sandbox's network namespace to the pod network and DNATs its hostPorts to
    /// it (as the portmap plugin does at sandbox creation); its address.
    async fn attach_network(
        &self,
        pod: &Pod,
        info: &SandboxInfo,
    ) -> Result<Option<String>, String> {
        let (Some(ns), Some(net)) = (&info.net_ns, &self.shared.network) else {
            return Ok(None);
        };
        let ip = net
            .attach(&self.uid, ns)
            .await
            .map_err(|e| format!("setting up the pod network: {e}"))?;
        let host_ports = crate::netfilter::host_ports_of(pod);
        if !host_ports.is_empty() {
            let Some(nf) = &self.shared.netfilter else {
                return Err(
                    "hostPort needs the node's nftables rules, which could not be set up".into(),
                );
            };
            nf.set_host_ports(&self.uid, ip, host_ports)
                .await
                .map_err(|e| format!("setting up hostPorts: {e}"))?;
        }
        Ok(Some(ip.to_string()))
    }

    /// The service-link variables for this pod, from the Service cache (upstream refuses to
    /// start a container before Services were read once, and so does this).
    async fn service_env(&self, pod: &Pod) -> Result<Vec<(String, String)>, env::EnvError> {
        let cache = &self.shared.services;
        if !cache.ready(Duration::from_secs(5)).await {
            return Err(env::EnvError(
                "services have not yet been read at least once, cannot construct envvars".into(),
            ));
        }
        let (master_ns, master_name) = service_env::master_key();
        let chosen = service_env::selected(
            pod,
            cache.in_namespace(&self.namespace),
            cache.get(master_ns, master_name),
        );
        Ok(service_env::vars(&chosen))
    }

    /// The kube-dns Service's ClusterIP: pods' nameserver. None (with a warning) while the
    /// Services were never read or it has none; ClusterFirst pods then resolve as the host.
    async fn cluster_dns(&self) -> Option<std::net::IpAddr> {
        let cache = &self.shared.services;
        let ip = if cache.ready(Duration::from_secs(5)).await {
            cache
                .get(crate::dns::KUBE_DNS_NAMESPACE, crate::dns::KUBE_DNS_SERVICE)
                .and_then(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
        } else {
            None
        };
        if ip.is_none() {
            tracing::warn!(pod = %self.key(), "no kube-dns ClusterIP known: the pod resolves names as the node does");
        }
        ip
    }

    fn slot_index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn all_containers(pod: &Pod) -> Vec<Container> {
    let mut all: Vec<Container> = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .cloned()
        .collect();
    all.extend(ephemeral_containers(pod));
    all
}

/// The pod's ephemeral containers as containers (the same fields, less what they may not
/// set; the target is read by `ephemeral_target`).
fn ephemeral_containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| capstan_slim::from_json::<Container>(e).ok())
        .collect()
}

/// The container whose process namespace an ephemeral container `name` joins (`kubectl
/// debug --target`).
fn ephemeral_target(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.target_container_name.clone())
}

/// The pod's termination grace period (30 s unless it says otherwise).
fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn hook_action(h: &k8s_openapi::api::core::v1::LifecycleHandler) -> Action {
    if let Some(e) = &h.exec {
        Action::Exec(e.command.clone().unwrap_or_default())
    } else if let Some(g) = &h.http_get {
        Action::Http(g.clone())
    } else if let Some(t) = &h.tcp_socket {
        Action::Tcp(t.clone())
    } else if let Some(s) = &h.sleep {
        Action::Sleep(Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0)))
    } else {
        Action::Unsupported("the hook names no action")
    }
}

pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
pub const LABEL_ATTEMPT: &str = "capstan.io/attempt";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_IMAGE_ID: &str = "capstan.io/image-id";

fn attempt_of(r: &ContainerRecord) -> u32 {
    r.labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// Unique on the node and short (runtime state paths hold unix sockets).
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let h = crate::names::stable_hash(&[uid.as_bytes(), name.as_bytes()]);
    format!("{h:016x}-{attempt}")
}

fn image_id(image: &crate::images::Image) -> String {
    image
        .repo_digests
        .first()
        .cloned()
        .unwrap_or_else(|| image.id.clone())
}

fn hostname_of(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
        .chars()
        .take(63)
        .collect()
}

fn self_terminated(id: &str, state: &ContainerState, message: String) -> Terminated {
    match state {
        ContainerState::Exited {
            exit_code,
            oom_killed,
            started_at,
            finished_at,
        } => Terminated {
            exit_code: *exit_code,
            reason: if *oom_killed {
                "OOMKilled".into()
            } else if *exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message,
            started_at: *started_at,
            finished_at: *finished_at,
            container_id: format!("capstan://{id}"),
        },
        _ => Terminated {
            exit_code: 0,
            reason: String::new(),
            message,
            started_at: None,
            finished_at: SystemTime::now(),
            container_id: format!("capstan://{id}"),
        },
    }
}

/// The termination message: the file the container wrote (4 KiB at most), else — for
/// `FallbackToLogsOnError` after a failure — the log's last 80 lines (2 KiB at most).
fn termination_message(
    log: &std::path::Path,
    file: Option<PathBuf>,
    fallback_to_logs: bool,
    state: &ContainerState,
) -> String {
    let written = file
        .and_then(|f| std::fs::read(f).ok())
        .map(|mut b| {
            b.truncate(4096);
            String::from_utf8_lossy(&b).into_owned()
        })
        .unwrap_or_default();
    let failed = matches!(state, ContainerState::Exited { exit_code, .. } if *exit_code != 0);
    if !written.is_empty() || !failed || !fallback_to_logs {
        return written;
    }
    // The log reader's tail (blocks read from the end, partial lines joined), as `logs` uses.
    let opts = crate::logs::reader::LogOptions {
        tail_lines: Some(80),
        ..Default::default()
    };
    let mut out: Vec<u8> = Vec::new();
    if crate::logs::reader::read_log(log, &opts, &mut out).is_err() {
        return String::new();
    }
    let start = out.len().saturating_sub(2048);
    String::from_utf8_lossy(&out[start..]).into_owned()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
