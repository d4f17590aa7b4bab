//! The PersistentVolume binder (upstream `pkg/controller/volume/persistentvolume`): claims are
//! bound to volumes, provisioners are told when a claim is theirs, released volumes reclaimed.
//!
//! Two kube-rs Controllers share one informer per kind: `claim_sync` drives each claim to
//! Bound (woken by its volume's changes and, for unclaimed volumes, every pending claim),
//! `volume_sync` drives each volume's phase (woken by its claim's changes). Both resync every
//! 15 s, as upstream's `--pvclaimbinder-sync-period`.

mod claim_sync;
pub mod matching;
mod volume_sync;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use capstan_slim::WatchApi;
use capstan_slim::{Action, Controller};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::backoff::Backoff;
use crate::context::Context;
use crate::events::Recorder;
use crate::informers::Shared;

/// upstream's default `--pvclaimbinder-sync-period`.
const RESYNC: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// What both loops read.
pub struct State {
    ctx: Arc<Context>,
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    recorder: Recorder,
    errors: Backoff,
}

impl State {
    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        if name.is_empty() {
            return None;
        }
        self.classes.get(&ObjectRef::new(name))
    }
}

pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let volumes = Shared::<PersistentVolume>::start(WatchApi::all(client.clone()));
    let claims = Shared::<PersistentVolumeClaim>::start(WatchApi::all(client.clone()));
    let classes = Shared::<StorageClass>::start(WatchApi::all(client.clone()));
    volumes.ready().await;
    claims.ready().await;
    classes.ready().await;
    let st = Arc::new(State {
        ctx: ctx.clone(),
        volumes: volumes.store.clone(),
        claims: claims.store.clone(),
        classes: classes.store.clone(),
        recorder: ctx.recorder("persistentvolume-controller"),
        errors: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
    });

    let pending = claims.store.clone();
    let claim_loop =
        Controller::for_shared_stream(claims.subscribe(), claims.store.clone())
            .watches_shared_stream(volumes.subscribe(), move |pv: Arc<PersistentVolume>| {
                match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    Some(r) => vec![ObjectRef::<PersistentVolumeClaim>::new(
                        r.name.as_deref().unwrap_or(""),
                    )
                    .within(r.namespace.as_deref().unwrap_or(""))],
                    // A volume nobody claims may be what a pending claim waits for.
                    None => pending
                        .state()
                        .iter()
                        .filter(|c| {
                            c.spec
                                .as_ref()
                                .and_then(|s| s.volume_name.as_deref())
                                .is_none_or(str::is_empty)
                        })
                        .map(|c| ObjectRef::from_obj(c.as_ref()))
                        .collect(),
                }
            })
            .reconcile_all_on(tick())
            .run(claim_sync::reconcile, claim_error, st.clone());

    let volume_loop = Controller::for_shared_stream(volumes.subscribe(), volumes.store.clone())
        .watches_shared_stream(claims.subscribe(), |c: Arc<PersistentVolumeClaim>| {
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty())
                .map(ObjectRef::<PersistentVolume>::new)
        })
        .reconcile_all_on(tick())
        .run(volume_sync::reconcile, volume_error, st.clone());
    futures::join!(claim_loop, volume_loop);
    // The informers live until both loops end.
    drop((volumes, claims, classes));
}

fn tick() -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((), |()| async {
        tokio::time::sleep(RESYNC).await;
        Some(((), ()))
    })
}

/// Another writer (the other loop, a provisioner, the protection controllers) changed the
/// object since it was read: expected, retried at once on the fresh copy.
fn conflict(err: &Error) -> bool {
    matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == 409)
}

fn claim_error(claim: Arc<PersistentVolumeClaim>, err: &Error, st: Arc<State>) -> Action {
    let key = format!("pvc/{}", crate::pods::key(&claim.metadata));
    let (attempts, delay) = st.errors.failed(&key);
    if conflict(err) {
        tracing::debug!(claim = %key, attempts, "persistentvolume: claim changed meanwhile; again");
        return Action::requeue(delay);
    }
    tracing::warn!(claim = %key, error = %err, attempts, "persistentvolume: claim sync failed");
    Action::requeue(delay)
}

fn volume_error(pv: Arc<PersistentVolume>, err: &Error, st: Arc<State>) -> Action {
    let key = format!("pv/{}", pv.metadata.name.as_deref().unwrap_or(""));
    let (attempts, delay) = st.errors.failed(&key);
    if conflict(err) {
        tracing::debug!(volume = %key, attempts, "persistentvolume: volume changed meanwhile; again");
        return Action::requeue(delay);
    }
    tracing::warn!(volume = %key, error = %err, attempts, "persistentvolume: volume sync failed");
    Action::requeue(delay)
}
