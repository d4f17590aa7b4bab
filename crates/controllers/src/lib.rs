//! capstan's control loops: kube-controller-manager's controllers as ordinary kube-rs clients
//! over any `kube::Client` (in `capstan server`, the in-process one), run while this process
//! holds the controller-manager Lease, so several servers sharing a store run each loop once.

pub mod backoff;
pub mod conditions;
pub mod context;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbage_collector;
pub mod hash;
pub mod history;
pub mod informers;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod node_lifecycle;
pub mod owners;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod retry_gate;
pub mod root_ca_publisher;
pub mod service_pods;
pub mod serviceaccount;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;

use std::sync::Arc;

use kube::Client;
use tokio::task::JoinHandle;

pub use context::{Context, Options};

/// Run the controllers until the task is dropped: wait to lead, run every enabled loop while
/// leading, stop them all if the lease is lost, and try again.
pub async fn run(client: Client, opts: Options) {
    leader::run_while_leading(client, opts, spawn_loops).await
}

/// How a loop is started: it gets the term's context and runs until aborted.
type Start = fn(Arc<Context>) -> JoinHandle<()>;

/// Start every enabled loop (one module each; upstream's controller names).
fn spawn_loops(ctx: Arc<Context>) -> Vec<JoinHandle<()>> {
    let loops: Vec<(&str, Start)> = vec![
        // ("name", |ctx| tokio::spawn(module::run(ctx))), one line each, sorted by name
        ("cronjob", |ctx| tokio::spawn(cronjob::run(ctx))),
        ("daemonset", |ctx| tokio::spawn(daemonset::run(ctx))),
        ("deployment", |ctx| tokio::spawn(deployment::run(ctx))),
        ("disruption", |ctx| tokio::spawn(disruption::run(ctx))),
        ("endpoints", |ctx| tokio::spawn(endpoints::run(ctx))),
        ("endpointslice", |ctx| tokio::spawn(endpointslice::run(ctx))),
        ("garbage-collector", |ctx| {
            tokio::spawn(garbage_collector::run(ctx))
        }),
        ("job", |ctx| tokio::spawn(job::run(ctx))),
        ("namespace", |ctx| tokio::spawn(namespace::run(ctx))),
        ("node-lifecycle", |ctx| {
            tokio::spawn(node_lifecycle::run(ctx))
        }),
        ("pod-garbage-collector", |ctx| tokio::spawn(podgc::run(ctx))),
        ("replicaset", |ctx| tokio::spawn(replicaset::run(ctx))),
        ("replicationcontroller", |ctx| {
            tokio::spawn(replicationcontroller::run(ctx))
        }),
        ("resourcequota", |ctx| tokio::spawn(resourcequota::run(ctx))),
        ("root-ca-cert-publisher", |ctx| {
            tokio::spawn(root_ca_publisher::run(ctx))
        }),
        ("serviceaccount", |ctx| {
            tokio::spawn(serviceaccount::run(ctx))
        }),
        ("statefulset", |ctx| tokio::spawn(statefulset::run(ctx))),
        ("taint-eviction-controller", |ctx| {
            tokio::spawn(taint_eviction::run(ctx))
        }),
        ("ttl-after-finished", |ctx| {
            tokio::spawn(ttl_after_finished::run(ctx))
        }),
    ];
    loops
        .into_iter()
        .filter(|(name, _)| ctx.opts.enabled(name))
        .map(|(name, start)| {
            tracing::debug!(controller = name, "starting");
            start(ctx.clone())
        })
        .collect()
}
