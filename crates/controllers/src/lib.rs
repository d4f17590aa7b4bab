//! capstan's control loops: kube-controller-manager's controllers as ordinary kube-rs clients
//! over any `kube::Client` (in `capstan server`, the in-process one), run while this process
//! holds the controller-manager Lease, so several servers sharing a store run each loop once.

pub mod admission_changes;
pub mod backoff;
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

pub use context::{Context, Options};

/// Run the controllers until the task is dropped: wait to lead, run every enabled loop while
/// leading, stop them all if the lease is lost, and try again.
pub async fn run(client: Client, opts: Options) {
    leader::run_while_leading(client, opts, spawn_loops).await
}

/// A loop: it gets the term's context and runs until aborted.
type Loop = fn(Arc<Context>) -> BoxFuture<'static, ()>;

/// Start every enabled loop (one module each; upstream's controller names). Each first waits
/// for the shared informers' first lists (`Context::warm`): kube's `Store::wait_until_ready`
/// wakes only one of several concurrent waiters, and several loops' Controllers wait on the
/// same shared store, so no loop may start waiting before the store is ready.
fn spawn_loops(ctx: Arc<Context>) -> Vec<JoinHandle<()>> {
    let loops: Vec<(&str, Loop)> = vec![
        // ("name", |ctx| module::run(ctx).boxed()), one line each, sorted by name
        ("clusterrole-aggregation", |ctx| {
            clusterrole_aggregation::run(ctx).boxed()
        }),
        ("cronjob", |ctx| cronjob::run(ctx).boxed()),
        ("csrapproving", |ctx| {
            certificates::approving::run(ctx).boxed()
        }),
        ("csrsigning", |ctx| certificates::signing::run(ctx).boxed()),
        ("daemonset", |ctx| daemonset::run(ctx).boxed()),
        ("deployment", |ctx| deployment::run(ctx).boxed()),
        ("disruption", |ctx| disruption::run(ctx).boxed()),
        ("endpoints", |ctx| endpoints::run(ctx).boxed()),
        ("endpointslice", |ctx| endpointslice::run(ctx).boxed()),
        ("endpointslicemirroring", |ctx| {
            endpointslice_mirroring::run(ctx).boxed()
        }),
        ("event-ttl", |ctx| event_ttl::run(ctx).boxed()),
        ("garbage-collector", |ctx| {
            garbage_collector::run(ctx).boxed()
        }),
        ("job", |ctx| job::run(ctx).boxed()),
        ("namespace", |ctx| namespace::run(ctx).boxed()),
        ("node-ipam-controller", |ctx| nodeipam::run(ctx).boxed()),
        ("node-lifecycle", |ctx| node_lifecycle::run(ctx).boxed()),
        ("persistentvolume-binder", |ctx| {
            persistentvolume::run(ctx).boxed()
        }),
        ("pod-garbage-collector", |ctx| podgc::run(ctx).boxed()),
        ("pv-protection", |ctx| {
            volume_protection::run_pv(ctx).boxed()
        }),
        ("pvc-protection", |ctx| {
            volume_protection::run_pvc(ctx).boxed()
        }),
        ("replicaset", |ctx| replicaset::run(ctx).boxed()),
        ("replicationcontroller", |ctx| {
            replicationcontroller::run(ctx).boxed()
        }),
        ("resourcequota", |ctx| resourcequota::run(ctx).boxed()),
        ("root-ca-cert-publisher", |ctx| {
            root_ca_publisher::run(ctx).boxed()
        }),
        ("service-lb-controller", |ctx| service_lb::run(ctx).boxed()),
        ("serviceaccount", |ctx| serviceaccount::run(ctx).boxed()),
        ("statefulset", |ctx| statefulset::run(ctx).boxed()),
        ("taint-eviction-controller", |ctx| {
            taint_eviction::run(ctx).boxed()
        }),
        ("tokencleaner", |ctx| tokencleaner::run(ctx).boxed()),
        ("ttl-after-finished", |ctx| {
            ttl_after_finished::run(ctx).boxed()
        }),
    ];
    loops
        .into_iter()
        .filter(|(name, _)| ctx.opts.enabled(name))
        .map(|(name, run)| {
            tracing::debug!(controller = name, "starting");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.warm().await;
                run(ctx).await
            })
        })
        .collect()
}
