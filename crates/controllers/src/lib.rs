//! capstan's control loops: kube-controller-manager's controllers as ordinary kube-rs clients
//! over any `kube::Client` (in `capstan server`, the in-process one), run while this process
//! holds the controller-manager Lease, so several servers sharing a store run each loop once.

pub mod admission_changes;
pub mod backoff;
pub mod cached_pod;
pub mod certificates;
pub mod clusterrole_aggregation;
pub mod conditions;
pub mod context;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslice_mirroring;
pub mod event_ttl;
pub mod events;
pub mod garbage_collector;
pub mod hash;
pub mod history;
pub mod informers;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod node_lifecycle;
pub mod nodeipam;
pub mod owner_index;
pub mod owners;
pub mod persistentvolume;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod retry_gate;
pub mod root_ca_publisher;
pub mod service_lb;
pub mod service_pods;
pub mod serviceaccount;
pub mod slow_start;
pub mod statefulset;
pub mod taint_eviction;
pub mod tokencleaner;
pub mod ttl_after_finished;
pub mod volume_protection;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::Client;
use tokio::task::JoinHandle;

pub use context::{ClientFor, Context, Credentials, Identity, LoopUser, Options, Term};

/// Run the controllers until the task is dropped: wait to lead (with `client`, the
/// controller-manager's own identity, which also runs the shared informers), run every enabled
/// loop while leading — each with the client `credentials` give its identity —, stop them all
/// if the lease is lost, and try again.
pub async fn run(client: Client, credentials: Credentials, opts: Options) {
    leader::run_while_leading(client, credentials, opts, spawn_loops).await
}

/// A loop: it gets its context and runs until aborted.
type Loop = fn(Arc<Context>) -> BoxFuture<'static, ()>;

use Identity::{ApiServer, ServiceAccount as Sa};

/// Start every enabled loop (one module each; upstream's controller names). Each first waits
/// for the shared informers' first lists (`Context::warm`): kube's `Store::wait_until_ready`
/// wakes only one of several concurrent waiters, and several loops' Controllers wait on the
/// same shared store, so no loop may start waiting before the store is ready.
///
/// Each loop acts as upstream's ServiceAccount for it (cmd/kube-controller-manager's
/// `ClientBuilder.ClientOrDie(<name>)`); `event-ttl` is the API server's own work upstream
/// (etcd leases expire Events), so it keeps the loopback identity.
fn spawn_loops(term: Arc<Term>) -> Vec<JoinHandle<()>> {
    let loops: Vec<(&str, Identity, Loop)> = vec![
        // ("name", identity, |ctx| module::run(ctx).boxed()), one line each, sorted by name
        (
            "clusterrole-aggregation",
            Sa("clusterrole-aggregation-controller"),
            |ctx| clusterrole_aggregation::run(ctx).boxed(),
        ),
        ("cronjob", Sa("cronjob-controller"), |ctx| {
            cronjob::run(ctx).boxed()
        }),
        ("csrapproving", Sa("certificate-controller"), |ctx| {
            certificates::approving::run(ctx).boxed()
        }),
        ("csrsigning", Sa("certificate-controller"), |ctx| {
            certificates::signing::run(ctx).boxed()
        }),
        ("daemonset", Sa("daemon-set-controller"), |ctx| {
            daemonset::run(ctx).boxed()
        }),
        ("deployment", Sa("deployment-controller"), |ctx| {
            deployment::run(ctx).boxed()
        }),
        ("disruption", Sa("disruption-controller"), |ctx| {
            disruption::run(ctx).boxed()
        }),
        ("endpoints", Sa("endpoint-controller"), |ctx| {
            endpoints::run(ctx).boxed()
        }),
        ("endpointslice", Sa("endpointslice-controller"), |ctx| {
            endpointslice::run(ctx).boxed()
        }),
        (
            "endpointslicemirroring",
            Sa("endpointslicemirroring-controller"),
            |ctx| endpointslice_mirroring::run(ctx).boxed(),
        ),
        ("event-ttl", ApiServer, |ctx| event_ttl::run(ctx).boxed()),
        (
            "garbage-collector",
            Sa("generic-garbage-collector"),
            |ctx| garbage_collector::run(ctx).boxed(),
        ),
        ("job", Sa("job-controller"), |ctx| job::run(ctx).boxed()),
        ("namespace", Sa("namespace-controller"), |ctx| {
            namespace::run(ctx).boxed()
        }),
        ("node-ipam-controller", Sa("node-controller"), |ctx| {
            nodeipam::run(ctx).boxed()
        }),
        ("node-lifecycle", Sa("node-controller"), |ctx| {
            node_lifecycle::run(ctx).boxed()
        }),
        (
            "persistentvolume-binder",
            Sa("persistent-volume-binder"),
            |ctx| persistentvolume::run(ctx).boxed(),
        ),
        (
            "pod-garbage-collector",
            Sa("pod-garbage-collector"),
            |ctx| podgc::run(ctx).boxed(),
        ),
        ("pv-protection", Sa("pv-protection-controller"), |ctx| {
            volume_protection::run_pv(ctx).boxed()
        }),
        ("pvc-protection", Sa("pvc-protection-controller"), |ctx| {
            volume_protection::run_pvc(ctx).boxed()
        }),
        ("replicaset", Sa("replicaset-controller"), |ctx| {
            replicaset::run(ctx).boxed()
        }),
        (
            "replicationcontroller",
            Sa("replication-controller"),
            |ctx| replicationcontroller::run(ctx).boxed(),
        ),
        ("resourcequota", Sa("resourcequota-controller"), |ctx| {
            resourcequota::run(ctx).boxed()
        }),
        (
            "root-ca-cert-publisher",
            Sa("root-ca-cert-publisher"),
            |ctx| root_ca_publisher::run(ctx).boxed(),
        ),
        // k3s's ServiceLB does what a cloud's service controller does upstream.
        ("service-lb-controller", Sa("service-controller"), |ctx| {
            service_lb::run(ctx).boxed()
        }),
        ("serviceaccount", Sa("service-account-controller"), |ctx| {
            serviceaccount::run(ctx).boxed()
        }),
        ("statefulset", Sa("statefulset-controller"), |ctx| {
            statefulset::run(ctx).boxed()
        }),
        ("taint-eviction-controller", Sa("node-controller"), |ctx| {
            taint_eviction::run(ctx).boxed()
        }),
        ("tokencleaner", Sa("token-cleaner"), |ctx| {
            tokencleaner::run(ctx).boxed()
        }),
        (
            "ttl-after-finished",
            Sa("ttl-after-finished-controller"),
            |ctx| ttl_after_finished::run(ctx).boxed(),
        ),
    ];
    loops
        .into_iter()
        .filter(|(name, _, _)| term.opts.enabled(name))
        .map(|(name, identity, run)| {
            tracing::debug!(controller = name, ?identity, "starting");
            let term = term.clone();
            tokio::spawn(async move {
                let ctx = Arc::new(term.context_for(identity).await);
                ctx.warm().await;
                run(ctx).await
            })
        })
        .collect()
}
