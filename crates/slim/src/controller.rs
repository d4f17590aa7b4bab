//! A control loop as kube-runtime's `Controller` runs one: triggers name objects, and each
//! named object is reconciled (one run at a time per object) with what its store holds.
//!
//! Why: kube's Controller is generic over the kind, the reconciler and its context, so each
//! of capstan's ~30 loops carried its own copy of kube's scheduler, runner and applier
//! (0.72 MB of the dist binary). Here that machinery is written once, over plain keys
//! (`drive`); what stays per loop is the builder's mapping of triggers to keys and the
//! lookup of an object in its store before its reconciler runs.
//!
//! Semantics kept from kube's applier: a trigger schedules at once and a requeue after its
//! delay, the earlier time winning; an object is never reconciled twice at once (a request
//! for one being reconciled waits until that run ends, then runs); nothing runs before the
//! store's first list; an object not in the store is skipped; unlimited concurrency; the
//! loop ends when every trigger stream has ended and the runs in flight are done.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, FuturesUnordered, Stream, StreamExt};
use kube::api::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use tokio::time::Instant;
use tracing::Instrument;

/// What a reconcile (or the error policy after a failed one) asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `after`, even if nothing changes.
    pub const fn requeue(after: Duration) -> Self {
        Action {
            requeue_after: Some(after),
        }
    }

    /// Reconcile again only when a trigger names the object.
    pub const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }
}

/// An object as triggers name it and the scheduler orders it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    namespace: Option<String>,
    name: String,
}

impl Key {
    fn of(meta: &ObjectMeta) -> Self {
        Key {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    fn of_ref<K: Resource>(r: &ObjectRef<K>) -> Self {
        Key {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

/// The references in `meta` to an owner of kind `kind` in `api_version`, as keys in the
/// dependent's namespace (as kube's `trigger_owners` names them).
fn owner_keys(meta: &ObjectMeta, api_version: &str, kind: &str) -> Vec<Key> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.api_version == api_version && o.kind == kind)
        .map(|o| Key {
            namespace: meta.namespace.clone(),
            name: o.name.clone(),
        })
        .collect()
}

fn logged<E: Display>(e: E) {
    tracing::debug!(error = %e, "controller trigger error");
}

/// A control loop of objects of kind `K`, kept in `store`.
pub struct Controller<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash,
{
    store: Store<K>,
    triggers: Vec<BoxStream<'static, Key>>,
}

impl<K> Controller<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Eq + Hash + Send + Sync,
{
    /// Reconcile each object `trigger` yields; `store` holds them (fed by the same watch).
    pub fn for_stream<E: Display>(
        trigger: impl Stream<Item = Result<K, E>> + Send + 'static,
        store: Store<K>,
    ) -> Self {
        let keys = trigger.filter_map(|r| {
            futures::future::ready(match r {
                Ok(o) => Some(Key::of(o.meta())),
                Err(e) => {
                    logged(e);
                    None
                }
            })
        });
        Controller {
            store,
            triggers: vec![keys.boxed()],
        }
    }

    /// `for_stream` over a shared informer's stream of changed objects.
    pub fn for_shared_stream(
        trigger: impl Stream<Item = Arc<K>> + Send + 'static,
        store: Store<K>,
    ) -> Self {
        Controller {
            store,
            triggers: vec![trigger.map(|o| Key::of(o.meta())).boxed()],
        }
    }

    /// The store the loop reads its objects from.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Reconcile the owners (of kind `K`) of each object `trigger` yields.
    pub fn owns_stream<Child: Resource, E: Display>(
        mut self,
        trigger: impl Stream<Item = Result<Child, E>> + Send + 'static,
    ) -> Self {
        let (api_version, kind) = Self::type_names();
        let keys = trigger.flat_map(move |r| {
            stream::iter(match r {
                Ok(o) => owner_keys(o.meta(), &api_version, &kind),
                Err(e) => {
                    logged(e);
                    Vec::new()
                }
            })
        });
        self.triggers.push(keys.boxed());
        self
    }

    /// `owns_stream` over a shared informer's stream of changed objects.
    pub fn owns_shared_stream<Child: Resource + Send + Sync + 'static>(
        mut self,
        trigger: impl Stream<Item = Arc<Child>> + Send + 'static,
    ) -> Self {
        let (api_version, kind) = Self::type_names();
        let keys =
            trigger.flat_map(move |o| stream::iter(owner_keys(o.meta(), &api_version, &kind)));
        self.triggers.push(keys.boxed());
        self
    }

    /// Reconcile the objects `mapper` names for each object `trigger` yields.
    pub fn watches_stream<Other, E, I>(
        mut self,
        trigger: impl Stream<Item = Result<Other, E>> + Send + 'static,
        mapper: impl Fn(Other) -> I + Send + Sync + 'static,
    ) -> Self
    where
        E: Display,
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let keys = trigger.flat_map(move |r| {
            stream::iter(match r {
                Ok(o) => mapper(o).into_iter().map(|r| Key::of_ref(&r)).collect(),
                Err(e) => {
                    logged(e);
                    Vec::new()
                }
            })
        });
        self.triggers.push(keys.boxed());
        self
    }

    /// `watches_stream` over a shared informer's stream of changed objects.
    pub fn watches_shared_stream<Other, I>(
        mut self,
        trigger: impl Stream<Item = Arc<Other>> + Send + 'static,
        mapper: impl Fn(Arc<Other>) -> I + Send + Sync + 'static,
    ) -> Self
    where
        Other: Send + Sync + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let keys = trigger.flat_map(move |o| {
            let keys: Vec<Key> = mapper(o).into_iter().map(|r| Key::of_ref(&r)).collect();
            stream::iter(keys)
        });
        self.triggers.push(keys.boxed());
        self
    }

    /// Reconcile each object `trigger` names.
    pub fn reconcile_on(
        mut self,
        trigger: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    ) -> Self {
        self.triggers.push(trigger.map(|r| Key::of_ref(&r)).boxed());
        self
    }

    /// Reconcile every object in the store each time `trigger` yields.
    pub fn reconcile_all_on(mut self, trigger: impl Stream<Item = ()> + Send + 'static) -> Self {
        let store = self.store.clone();
        let keys = trigger.flat_map(move |()| {
            let keys: Vec<Key> = store.state().iter().map(|o| Key::of(o.meta())).collect();
            stream::iter(keys)
        });
        self.triggers.push(keys.boxed());
        self
    }

    /// Run the loop until every trigger stream has ended: `reconcile` each named object,
    /// `error_policy` deciding what follows a failed run.
    pub async fn run<Ctx, E, Fut>(
        self,
        reconcile: impl Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        error_policy: impl Fn(Arc<K>, &E, Arc<Ctx>) -> Action + Send + Sync + 'static,
        ctx: Arc<Ctx>,
    ) where
        Ctx: Send + Sync + 'static,
        E: Send + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let dyntype = K::DynamicType::default();
        let kind = K::kind(&dyntype).into_owned();
        let store = self.store.clone();
        let reconcile = Arc::new(reconcile);
        let error_policy = Arc::new(error_policy);
        let start: Start = Arc::new(move |key: &Key| {
            let mut oref = ObjectRef::<K>::new_with(&key.name, dyntype.clone());
            oref.namespace = key.namespace.clone();
            let obj = store.get(&oref)?;
            let (ctx, reconcile, error_policy) =
                (ctx.clone(), reconcile.clone(), error_policy.clone());
            Some(
                async move {
                    match reconcile(obj.clone(), ctx.clone()).await {
                        Ok(action) => action,
                        Err(e) => error_policy(obj, &e, ctx),
                    }
                }
                .boxed(),
            )
        });
        let store = self.store;
        let ready = async move {
            // Dropped writer: the watch ended; the triggers end with it.
            let _ = store.wait_until_ready().await;
        }
        .boxed();
        drive(
            kind,
            stream::select_all(self.triggers).boxed(),
            ready,
            start,
        )
        .await;
    }

    fn type_names() -> (String, String) {
        let dyntype = K::DynamicType::default();
        (
            K::api_version(&dyntype).into_owned(),
            K::kind(&dyntype).into_owned(),
        )
    }
}

/// Start reconciling the object `key` names (`None`: it is not in the store).
type Start = Arc<dyn Fn(&Key) -> Option<BoxFuture<'static, Action>> + Send + Sync>;

/// The loop itself, the same for every kind.
async fn drive(
    kind: String,
    mut triggers: BoxStream<'static, Key>,
    ready: BoxFuture<'static, ()>,
    start: Start,
) {
    let mut ready = ready.fuse();
    let mut is_ready = false;
    let mut triggers_done = false;
    let mut queue = Queue::default();
    let mut running: HashSet<Key> = HashSet::new();
    let mut runs = FuturesUnordered::new();
    loop {
        if triggers_done && runs.is_empty() {
            return;
        }
        let next = queue.next_time(&running);
        let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            Some((key, action)) = runs.next(), if !runs.is_empty() => {
                running.remove(&key);
                let action: Action = action;
                if let Some(at) = action.requeue_after.and_then(|d| Instant::now().checked_add(d)) {
                    queue.schedule(key, at);
                }
            }
            _ = &mut ready, if !is_ready => is_ready = true,
            key = triggers.next(), if !triggers_done => match key {
                Some(key) => queue.schedule(key, Instant::now()),
                None => triggers_done = true,
            },
            // Once the triggers have ended nothing new starts: waking for due keys would
            // only spin until the runs in flight end.
            _ = tokio::time::sleep_until(wake), if is_ready && !triggers_done && next.is_some() => {}
        }
        if !is_ready || triggers_done {
            continue;
        }
        for key in queue.take_due(Instant::now(), &running) {
            let Some(run) = start(&key) else {
                continue;
            };
            let span = tracing::info_span!("reconciling object", kind = %kind, namespace = ?key.namespace, name = %key.name);
            running.insert(key.clone());
            runs.push(run.map(move |action| (key, action)).instrument(span));
        }
    }
}

/// Pending keys by time: one entry per key, the earliest asked for.
#[derive(Default)]
struct Queue {
    at: HashMap<Key, Instant>,
    order: BTreeSet<(Instant, Key)>,
}

impl Queue {
    fn schedule(&mut self, key: Key, when: Instant) {
        match self.at.get(&key) {
            Some(&t) if t <= when => return,
            Some(&t) => {
                self.order.remove(&(t, key.clone()));
            }
            None => {}
        }
        self.at.insert(key.clone(), when);
        self.order.insert((when, key));
    }

    /// When the first key not being reconciled is due.
    fn next_time(&self, running: &HashSet<Key>) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, k)| !running.contains(k))
            .map(|(t, _)| *t)
    }

    /// Take the keys due by `now`, except those being reconciled (they wait for the run).
    fn take_due(&mut self, now: Instant, running: &HashSet<Key>) -> Vec<Key> {
        let due: Vec<(Instant, Key)> = self
            .order
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter(|(_, k)| !running.contains(k))
            .cloned()
            .collect();
        for entry in &due {
            self.order.remove(entry);
            self.at.remove(&entry.1);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn key(name: &str) -> Key {
        Key {
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    #[test]
    fn the_earlier_time_wins_and_keys_being_reconciled_wait() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.schedule(key("a"), now + Duration::from_secs(10));
        q.schedule(key("a"), now + Duration::from_secs(5));
        q.schedule(key("a"), now + Duration::from_secs(20));
        assert_eq!(
            q.next_time(&HashSet::new()),
            Some(now + Duration::from_secs(5))
        );
        q.schedule(key("b"), now);
        let running: HashSet<Key> = [key("b")].into();
        assert_eq!(q.take_due(now, &running), Vec::<Key>::new());
        assert_eq!(q.next_time(&running), Some(now + Duration::from_secs(5)));
        assert_eq!(q.take_due(now, &HashSet::new()), vec![key("b")]);
        assert_eq!(
            q.take_due(now + Duration::from_secs(6), &HashSet::new()),
            vec![key("a")]
        );
        assert!(q.at.is_empty() && q.order.is_empty());
    }

    /// A record of runs: (key, event) with event "start" or "end".
    type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

    fn starter(log: Log, requeue: Option<Duration>, present: &'static [&'static str]) -> Start {
        Arc::new(move |k: &Key| {
            if !present.contains(&k.name.as_str()) {
                return None;
            }
            let (log, name) = (log.clone(), k.name.clone());
            Some(
                async move {
                    log.lock().unwrap().push((name.clone(), "start"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    log.lock().unwrap().push((name, "end"));
                    requeue.map_or(Action::await_change(), Action::requeue)
                }
                .boxed(),
            )
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_is_never_reconciled_twice_at_once_and_a_trigger_meanwhile_runs_after() {
        let log: Log = Arc::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let run = tokio::spawn(drive(
            "Thing".into(),
            rx.boxed(),
            async {}.boxed(),
            starter(log.clone(), None, &["a", "b"]),
        ));
        tx.unbounded_send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // While "a" runs: two more triggers for it, one for "b", one for an absent object.
        tx.unbounded_send(key("a")).unwrap();
        tx.unbounded_send(key("a")).unwrap();
        tx.unbounded_send(key("b")).unwrap();
        tx.unbounded_send(key("gone")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tx);
        run.await.unwrap();
        let log = log.lock().unwrap().clone();
        let of = |n: &str| -> Vec<&'static str> {
            log.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, e)| *e)
                .collect()
        };
        assert_eq!(of("a"), ["start", "end", "start", "end"], "{log:?}");
        assert_eq!(of("b"), ["start", "end"], "{log:?}");
        assert!(of("gone").is_empty());
        // "b" ran beside the first run of "a".
        let b_start = log
            .iter()
            .position(|e| *e == ("b".into(), "start"))
            .unwrap();
        let a_end = log.iter().position(|e| *e == ("a".into(), "end")).unwrap();
        assert!(b_start < a_end, "{log:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_triggers_end_the_runs_in_flight_finish_and_nothing_spins() {
        // "a" ends at once asking to run again in 10 ms; "b" runs for 200 ms. The triggers
        // end meanwhile: "a" falls due while "b" still runs, and must not be waited on in a
        // loop that never yields (paused time would then never advance to end "b").
        let ran: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = ran.clone();
        let start: Start = Arc::new(move |k: &Key| {
            let (log, name) = (log.clone(), k.name.clone());
            Some(
                async move {
                    let slow = name == "b";
                    log.lock().unwrap().push(name);
                    if slow {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Action::await_change();
                    }
                    Action::requeue(Duration::from_millis(10))
                }
                .boxed(),
            )
        });
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let run = tokio::spawn(drive("Thing".into(), rx.boxed(), async {}.boxed(), start));
        tx.unbounded_send(key("a")).unwrap();
        tx.unbounded_send(key("b")).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the loop ends once the runs in flight do")
            .unwrap();
        assert_eq!(*ran.lock().unwrap(), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_again_after_its_delay_and_nothing_runs_before_the_store_is_ready() {
        let log: Log = Arc::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let run = tokio::spawn(drive(
            "Thing".into(),
            rx.boxed(),
            async move {
                let _ = ready_rx.await;
            }
            .boxed(),
            starter(log.clone(), Some(Duration::from_secs(1)), &["a"]),
        ));
        tx.unbounded_send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "ran before the store was ready"
        );
        ready_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(2200)).await;
        drop(tx);
        run.await.unwrap();
        let starts = log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1 == "start")
            .count();
        // At 0.3 s, then 1 s after each end (0.35 s + 1 s, 1.4 s + 1 s): three runs by 2.5 s.
        assert_eq!(starts, 3, "{:?}", log.lock().unwrap());
        assert!(Instant::now() - started >= Duration::from_millis(2500));
    }
}
