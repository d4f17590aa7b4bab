//! Runs CEL (custom resources' rules, admission policies) on threads of their own, under a
//! deadline and a cap on concurrent evaluations, so a rule whose cost the static estimate got
//! wrong answers a 422 instead of stalling the server's request threads.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use capstan_schema::{CelRules, Violation};
use serde_json::Value;
use tokio::sync::Semaphore;

/// Upstream's per-request CEL cost budget, as wall-clock time: ample for any rule the
/// static check admits on real data (they take microseconds).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);
/// Evaluations at once; one that runs away keeps its slot until it ends.
pub const DEFAULT_SLOTS: usize = 4;

#[derive(Clone)]
pub struct CelRunner {
    slots: Arc<Semaphore>,
    deadline: Duration,
    workers: Arc<Workers>,
}

type Job = Box<dyn FnOnce() + Send>;

/// One long-lived thread per slot, started on first use: a thread per evaluation cost
/// ~0.4 ms, more than the evaluation. A job holds its slot's permit until it really ends,
/// so a runaway keeps its worker busy and never queues behind another.
struct Workers {
    count: usize,
    queue: OnceLock<Option<Sender<Job>>>,
}

impl Workers {
    fn submit(&self, job: Job) -> bool {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let started = (0..self.count)
                .filter(|_| {
                    let rx = rx.clone();
                    // Plain threads, not spawn_blocking: a runaway evaluation must not hold
                    // up the runtime's shutdown.
                    std::thread::Builder::new()
                        .name("cel".into())
                        .stack_size(crate::limits::THREAD_STACK_BYTES)
                        .spawn(move || loop {
                            let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            };
                            // A panicking evaluation must not take its worker with it.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        })
                        .is_ok()
                })
                .count();
            (started > 0).then_some(tx)
        });
        queue.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Overrun {
    /// Every slot is held by an evaluation (runaway ones included) for the whole deadline.
    Busy,
    /// The rules did not finish within the deadline.
    Budget,
}

impl Default for CelRunner {
    fn default() -> Self {
        CelRunner::new(DEFAULT_SLOTS, DEFAULT_DEADLINE)
    }
}

impl CelRunner {
    pub fn new(slots: usize, deadline: Duration) -> Self {
        CelRunner {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            deadline,
            workers: Arc::new(Workers {
                count: slots.max(1),
                queue: OnceLock::new(),
            }),
        }
    }

    /// The rules' violations, or why they could not be had in time.
    pub async fn run(
        &self,
        rules: Arc<CelRules>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<Violation>, Overrun> {
        let (obj, old) = (obj.clone(), old.cloned());
        self.run_with(move || rules.validate(&obj, old.as_ref()))
            .await
    }

    /// Run any CEL work (admission policies' expressions) under the same slots and deadline.
    pub async fn run_with<T, F>(&self, work: F) -> Result<T, Overrun>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let start = tokio::time::Instant::now();
        let permit = tokio::time::timeout(self.deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Overrun::Busy)?
            .map_err(|_| Overrun::Busy)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = self.workers.submit(Box::new(move || {
            let found = work();
            drop(permit);
            let _ = tx.send(found);
        }));
        if !submitted {
            return Err(Overrun::Busy);
        }
        let left = self.deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(found)) => Ok(found),
            _ => Err(Overrun::Budget),
        }
    }
}
