//! Leadership: the loops run only while this process holds the `kube-controller-manager`
//! Lease in `kube-system` (upstream's name), the scheduler while it holds `kube-scheduler`,
//! so servers sharing a store run each once.

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
    let term_client = client.clone();
    let identity = opts.identity.clone();
    let duration = opts.lease_duration;
    lead(
        client,
        Leadership {
            lease: LEASE_NAME,
            identity,
            duration,
            field_manager: "capstan-controller-manager",
            what: "controllers",
        },
        move || {
            start(Arc::new(Term::new(
                term_client.clone(),
                credentials.clone(),
                opts.clone(),
            )))
        },
    )
    .await
}

/// One leader-elected component: its Lease in `kube-system` and who asks for it.
pub struct Leadership {
    pub lease: &'static str,
    pub identity: String,
    pub duration: Duration,
    pub field_manager: &'static str,
    /// For the log lines ("controllers", "scheduler").
    pub what: &'static str,
}

/// Hold `who.lease`; while held, run what `start` spawns; when lost, abort it all and
/// campaign again. Servers sharing a store thereby run the component once, and another
/// takes over within the lease duration when the holder dies.
pub async fn lead(client: Client, who: Leadership, start: impl Fn() -> Vec<JoinHandle<()>>) {
    let duration = who.duration.as_secs().max(2);
    // Renew a third of the way before expiry, as upstream's renew deadline (10 s of 15 s).
    let grace = (duration / 3).max(1);
    let mut retry = Duration::from_millis(200);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), who.lease)
            .with_namespace(LEASE_NAMESPACE)
            .with_parameters(
                LeaseParams::new(who.identity.clone(), duration, grace)
                    .with_field_manager(who.field_manager),
            )
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, lease = who.lease, "lease unavailable; retrying");
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
            tracing::info!(identity = %who.identity, lease = who.lease, "leading: {} started", who.what);
            running = start();
        } else if !is_leader && !running.is_empty() {
            tracing::warn!(identity = %who.identity, lease = who.lease, "lease lost: {} stopped", who.what);
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
