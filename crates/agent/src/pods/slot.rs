//! What the agent knows of one container of a pod: its current run (attempt, runtime id,
//! observed state), the previous run's end, restarts, why it is waiting, and its crash
//! back-off (upstream's: the first restart at once, then 10 s doubling to 5 min, reset
//! after 10 min of running).

use std::time::{Duration, Instant, SystemTime};

use crate::runtime::ContainerState;

pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
    pub container_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Sidecar,
    App,
    /// Added to a running pod for debugging (`kubectl debug`): runs once, never restarts, and
    /// counts for neither the pod's phase nor its readiness.
    Ephemeral,
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub kind: Kind,
    /// The current run: attempt number and runtime id.
    pub run: Option<(u32, String)>,
    pub state: Option<ContainerState>,
    /// Set once the current run's end is known (exit code, reason, message).
    pub terminated: Option<Terminated>,
    pub last: Option<Terminated>,
    pub restarts: u32,
    /// Why it is not running (reason, message).
    pub waiting: Option<(String, String)>,
    pub image: String,
    pub image_id: String,
    /// The delay before the next start, and when it may happen.
    pub backoff: Duration,
    pub not_before: Option<Instant>,
    /// The wait the last scheduled restart got (shown in CrashLoopBackOff's message).
    pub shown: Duration,
    /// Probes of the current run: whether it has them, and their verdicts so far.
    pub has_readiness: bool,
    pub has_startup: bool,
    pub readiness: Option<bool>,
    pub startup_ok: bool,
}

impl Slot {
    pub fn new(name: &str, kind: Kind, image: &str) -> Slot {
        Slot {
            name: name.to_string(),
            kind,
            run: None,
            state: None,
            terminated: None,
            last: None,
            restarts: 0,
            waiting: Some(("ContainerCreating".into(), String::new())),
            image: image.to_string(),
            image_id: String::new(),
            backoff: Duration::ZERO,
            not_before: None,
            shown: Duration::ZERO,
            has_readiness: false,
            has_startup: false,
            readiness: None,
            startup_ok: false,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, Some(ContainerState::Running { .. }))
    }

    /// Running and past its startup probe (`started` in the status).
    pub fn started(&self) -> bool {
        self.running() && (!self.has_startup || self.startup_ok)
    }

    /// Started and passing its readiness probe (`ready` in the status).
    pub fn ready(&self) -> bool {
        self.started() && (!self.has_readiness || self.readiness == Some(true))
    }

    pub fn exited(&self) -> Option<&Terminated> {
        self.terminated.as_ref()
    }

    pub fn next_attempt(&self) -> u32 {
        self.run.as_ref().map_or(0, |(a, _)| a + 1)
    }

    /// May a (re)start happen now? Returns the wait otherwise.
    pub fn ready_to_start(&self, now: Instant) -> Result<(), Duration> {
        match self.not_before {
            Some(t) if t > now => Err(t - now),
            _ => Ok(()),
        }
    }

    /// After a run ends: the next start waits the current back-off, which then doubles.
    pub fn schedule_restart(&mut self, now: Instant, ran_for: Option<Duration>) {
        if ran_for.is_some_and(|d| d >= BACKOFF_RESET_AFTER) {
            self.backoff = Duration::ZERO;
        }
        self.not_before = Some(now + self.backoff);
        self.shown = self.backoff;
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_START
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
    }

    /// A failure before the container ran (image, config): retried with the same back-off.
    pub fn schedule_retry(&mut self, now: Instant) {
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_START
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        self.not_before = Some(now + self.backoff);
        self.shown = self.backoff;
    }

    pub fn backoff_shown(&self) -> Duration {
        self.shown
    }

    /// The delay the current wait stands for (the `back-off 20s` of CrashLoopBackOff).
    pub fn current_delay(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_as_upstream() {
        let mut s = Slot::new("c", Kind::App, "busybox");
        let t = Instant::now();
        s.schedule_restart(t, Some(Duration::from_secs(1)));
        assert_eq!(
            s.ready_to_start(t),
            Ok(()),
            "the first restart is immediate"
        );
        s.schedule_restart(t, Some(Duration::from_secs(1)));
        assert_eq!(s.ready_to_start(t), Err(Duration::from_secs(10)));
        s.schedule_restart(t, Some(Duration::from_secs(1)));
        assert_eq!(s.ready_to_start(t), Err(Duration::from_secs(20)));
        for _ in 0..10 {
            s.schedule_restart(t, Some(Duration::from_secs(1)));
        }
        assert_eq!(s.ready_to_start(t), Err(BACKOFF_MAX));
        s.schedule_restart(t, Some(BACKOFF_RESET_AFTER));
        assert_eq!(
            s.ready_to_start(t),
            Ok(()),
            "a long run resets the back-off"
        );
    }
}
