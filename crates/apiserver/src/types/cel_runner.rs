//! Runs custom resources' CEL rules on threads of their own, under a deadline and a cap on
//! concurrent evaluations, so a rule whose cost the CRD-time estimate got wrong answers a 422
//! instead of stalling the server's request threads.

use std::sync::Arc;
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
        // A plain thread, not spawn_blocking: a runaway evaluation must not hold up the
        // runtime's shutdown, and it returns its slot only when it really ends.
        let spawned = std::thread::Builder::new()
            .name("cel".into())
            .stack_size(crate::limits::THREAD_STACK_BYTES)
            .spawn(move || {
                let found = work();
                drop(permit);
                let _ = tx.send(found);
            });
        if spawned.is_err() {
            return Err(Overrun::Busy);
        }
        let left = self.deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(found)) => Ok(found),
            _ => Err(Overrun::Budget),
        }
    }
}
