//! One simulated pod's life as the kubelet would live it: start, become ready after the
//! probes' initial delays, exit as its annotations say, restart per `restartPolicy` with the
//! kubelet's crash back-off, or finish Succeeded/Failed. Pure: time is passed in.

use std::net::Ipv4Addr;

use super::pod_view::{PodView, RestartPolicy};
use crate::clock::Millis;

/// The kubelet's crash-loop back-off: the first restart is at once, then 10 s doubling to 5 min.
pub fn crash_backoff(restart_count: i32) -> Millis {
    if restart_count <= 1 {
        return 0;
    }
    let doublings = (restart_count - 2).min(10) as u32;
    (10_000i64 << doublings).min(300_000)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    pub code: i32,
    pub started: Millis,
    pub finished: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Run {
    Running,
    /// Crashed, waiting out the back-off before the next start.
    BackOff {
        until: Millis,
        delay: Millis,
    },
    /// Finished for good (restartPolicy did not restart it).
    Done(Term),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSim {
    pub ip: Option<Ipv4Addr>,
    pub start_time: Millis,
    /// When the current run of the containers started.
    pub run_started: Millis,
    pub restart_count: i32,
    pub run: Run,
    pub last_term: Option<Term>,
    pub phase: Phase,
}

impl PodSim {
    /// A pod starts now (or carries on from what its status says, after a simulator restart).
    pub fn start(view: &PodView, ip: Option<Ipv4Addr>, now: Millis) -> PodSim {
        let start_time = view.start_time.unwrap_or(now);
        PodSim {
            ip,
            start_time,
            run_started: start_time,
            restart_count: view.restart_count,
            run: Run::Running,
            last_term: None,
            phase: Phase::Running,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.run, Run::Done(_))
    }

    /// Move the state up to `now`; returns when something next changes by itself.
    pub fn advance(&mut self, view: &PodView, now: Millis) -> Option<Millis> {
        loop {
            match self.run {
                Run::Done(_) => return None,
                Run::BackOff { until, .. } => {
                    if now < until {
                        return Some(until);
                    }
                    self.run = Run::Running;
                    self.run_started = until;
                }
                Run::Running => {
                    let mut wake: Option<Millis> = None;
                    if let Some(exit) = view.exit {
                        let at = self.run_started + exit.after;
                        if now >= at {
                            self.exit(view.restart_policy, exit.code, at);
                            continue;
                        }
                        wake = Some(at);
                    }
                    for c in view
                        .containers
                        .iter()
                        .chain(view.init_containers.iter().filter(|c| c.sidecar))
                    {
                        for t in [c.started_after, c.ready_after] {
                            let at = self.run_started + t;
                            if at > now {
                                wake = Some(wake.map_or(at, |w| w.min(at)));
                            }
                        }
                    }
                    return wake;
                }
            }
        }
    }

    fn exit(&mut self, policy: RestartPolicy, code: i32, at: Millis) {
        let term = Term {
            code,
            started: self.run_started,
            finished: at,
        };
        let restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        };
        if restart {
            self.restart_count += 1;
            self.last_term = Some(term);
            let delay = crash_backoff(self.restart_count);
            if delay == 0 {
                self.run_started = at;
            } else {
                self.run = Run::BackOff {
                    until: at + delay,
                    delay,
                };
            }
        } else {
            self.phase = if code == 0 {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            self.run = Run::Done(term);
        }
    }

    /// Whether a container (with these delays) is started / ready at `now`.
    pub fn started(&self, started_after: Millis, now: Millis) -> bool {
        self.run == Run::Running && now >= self.run_started + started_after
    }

    pub fn ready(&self, ready_after: Millis, now: Millis) -> bool {
        self.run == Run::Running && now >= self.run_started + ready_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::pod_view::{ContainerView, Exit};

    fn view(policy: RestartPolicy, exit: Option<Exit>, ready_after: Millis) -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            node: "n".into(),
            restart_policy: policy,
            containers: vec![ContainerView {
                name: "c".into(),
                image: "busybox".into(),
                started_after: 0,
                ready_after,
                sidecar: false,
            }],
            init_containers: vec![],
            exit,
            exit_error: None,
            deletion: None,
            phase: None,
            pod_ip: None,
            start_time: None,
            restart_count: 0,
            scheduled_at: None,
            readiness_gates: vec![],
        }
    }

    #[test]
    fn ready_after_the_initial_delay() {
        let v = view(RestartPolicy::Always, None, 3000);
        let mut s = PodSim::start(&v, None, 1000);
        assert_eq!(s.advance(&v, 1000), Some(4000));
        assert!(!s.ready(3000, 3999));
        assert_eq!(s.advance(&v, 4000), None);
        assert!(s.ready(3000, 4000));
    }

    #[test]
    fn never_ends_succeeded_or_failed_by_exit_code() {
        for (code, phase) in [(0, Phase::Succeeded), (2, Phase::Failed)] {
            let v = view(RestartPolicy::Never, Some(Exit { after: 5000, code }), 0);
            let mut s = PodSim::start(&v, None, 0);
            assert_eq!(s.advance(&v, 100), Some(5000));
            assert_eq!(s.advance(&v, 5000), None);
            assert_eq!(s.phase, phase);
            assert_eq!(
                s.run,
                Run::Done(Term {
                    code,
                    started: 0,
                    finished: 5000
                })
            );
            assert_eq!(s.restart_count, 0);
        }
    }

    #[test]
    fn on_failure_restarts_failures_with_back_off_and_finishes_on_success() {
        let v = view(
            RestartPolicy::OnFailure,
            Some(Exit {
                after: 1000,
                code: 1,
            }),
            0,
        );
        let mut s = PodSim::start(&v, None, 0);
        // First crash at 1 s restarts at once; the second at 2 s waits 10 s.
        assert_eq!(s.advance(&v, 2500), Some(12_000));
        assert_eq!(s.restart_count, 2);
        assert!(matches!(
            s.run,
            Run::BackOff {
                until: 12_000,
                delay: 10_000
            }
        ));
        assert_eq!(
            s.last_term,
            Some(Term {
                code: 1,
                started: 1000,
                finished: 2000
            })
        );
        assert_eq!(s.advance(&v, 12_000), Some(13_000));
        assert_eq!(s.phase, Phase::Running);
        let ok = view(
            RestartPolicy::OnFailure,
            Some(Exit {
                after: 1000,
                code: 0,
            }),
            0,
        );
        let mut s = PodSim::start(&ok, None, 0);
        s.advance(&ok, 1000);
        assert_eq!(s.phase, Phase::Succeeded);
    }

    #[test]
    fn always_restarts_even_on_success() {
        let v = view(
            RestartPolicy::Always,
            Some(Exit {
                after: 1000,
                code: 0,
            }),
            0,
        );
        let mut s = PodSim::start(&v, None, 0);
        s.advance(&v, 1500);
        assert_eq!((s.restart_count, s.phase), (1, Phase::Running));
        assert_eq!(s.run_started, 1000);
    }

    #[test]
    fn back_off_doubles_to_five_minutes() {
        let got: Vec<_> = (1..=8).map(crash_backoff).collect();
        assert_eq!(
            got,
            vec![0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        );
    }
}
