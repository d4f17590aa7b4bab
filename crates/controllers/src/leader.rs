//! Leadership: the loops run only while this process holds the `kube-controller-manager`
//! Lease in `kube-system` (upstream's name), so servers sharing a store run each loop once.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::task::JoinHandle;

use crate::context::{Credentials, Options, Term};

pub const LEASE_NAME: &str = "kube-controller-manager";
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Hold the Lease; while held, run what `start` spawns; when lost, abort it and wait again.
pub async fn run_while_leading(
    client: Client,
    credentials: Credentials,
    opts: Options,
    start: fn(Arc<Term>) -> Vec<JoinHandle<()>>,
) {
    let duration = opts.lease_duration.as_secs().max(2);
    // Renew a third of the way before expiry, as upstream's renew deadline (10 s of 15 s).
    let grace = (duration / 3).max(1);
    let mut retry = Duration::from_millis(200);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(LEASE_NAMESPACE)
            .with_parameters(
                LeaseParams::new(opts.identity.clone(), duration, grace)
                    .with_field_manager("capstan-controller-manager"),
            )
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, "controller-manager lease unavailable; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    };
    let (mut leading, _lease_task) = manager.watch().await;
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let is_leader = *leading.borrow_and_update();
        if is_leader && running.is_empty() {
            tracing::info!(identity = %opts.identity, "leading: controllers started");
            running = start(Arc::new(Term::new(
                client.clone(),
                credentials.clone(),
                opts.clone(),
            )));
        } else if !is_leader && !running.is_empty() {
            tracing::warn!(identity = %opts.identity, "lease lost: controllers stopped");
            for t in running.drain(..) {
                t.abort();
            }
        }
        if leading.changed().await.is_err() {
            break;
        }
    }
    for t in running {
        t.abort();
    }
}
