//! The restart policy, as a pure function of how each run ended.
//!
//! After a run, `always` starts the container again, `on_failure` only
//! after an unclean end, `never` not at all. The wait before the next start
//! begins at `restart.backoff.initial` and doubles up to `max`; a run that
//! lasted at least `max` resets it, so a replica that crashes once a day
//! restarts at once rather than after the longest wait.

use drover_proto::pb::AllocationPhase;
use drover_proto::spec::{RestartPolicy, RestartSpec};
use std::time::Duration;

/// What comes after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRun {
    /// Start again after this wait.
    Restart { after: Duration },
    /// The allocation has ended, in this phase (`Stopped` after a clean
    /// exit, `Failed` otherwise).
    End(AllocationPhase),
}

/// One allocation's restart state: its policy and the next wait.
#[derive(Clone, Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Restarts {
    pub fn new(spec: &RestartSpec) -> Restarts {
        let initial = spec.backoff.initial.std();
        Restarts {
            policy: spec.policy,
            initial,
            max: spec.backoff.max.std(),
            next: initial,
        }
    }

    /// Decides what follows a run that ended cleanly (exit code 0) or not,
    /// after lasting `ran`.
    pub fn after(&mut self, clean: bool, ran: Duration) -> AfterRun {
        let again = match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Never => false,
        };
        if !again {
            return AfterRun::End(if clean {
                AllocationPhase::Stopped
            } else {
                AllocationPhase::Failed
            });
        }
        if ran >= self.max {
            self.next = self.initial;
        }
        let after = self.next;
        self.next = (self.next * 2).min(self.max);
        AfterRun::Restart { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::quantity::Duration as SpecDuration;
    use drover_proto::spec::Backoff;

    fn restarts(policy: RestartPolicy, initial_ms: u64, max_ms: u64) -> Restarts {
        Restarts::new(&RestartSpec {
            policy,
            backoff: Backoff {
                initial: SpecDuration(initial_ms),
                max: SpecDuration(max_ms),
            },
        })
    }

    fn waits(r: &mut Restarts, runs: &[(bool, u64)]) -> Vec<AfterRun> {
        runs.iter()
            .map(|&(clean, ran)| r.after(clean, Duration::from_millis(ran)))
            .collect()
    }

    fn after(ms: u64) -> AfterRun {
        AfterRun::Restart {
            after: Duration::from_millis(ms),
        }
    }

    #[test]
    fn quick_failures_wait_twice_as_long_each_time_up_to_the_max() {
        let mut r = restarts(RestartPolicy::Always, 100, 1000);
        let quick = [(false, 10); 6];
        assert_eq!(
            waits(&mut r, &quick),
            [
                after(100),
                after(200),
                after(400),
                after(800),
                after(1000),
                after(1000)
            ]
        );
    }

    #[test]
    fn a_run_as_long_as_the_max_wait_starts_the_waits_over() {
        let mut r = restarts(RestartPolicy::Always, 100, 1000);
        assert_eq!(
            waits(&mut r, &[(false, 10), (false, 10), (false, 10)]),
            [after(100), after(200), after(400)]
        );
        assert_eq!(
            waits(&mut r, &[(false, 1000), (false, 10)]),
            [after(100), after(200)]
        );
        // Just short of the max is still a crash loop.
        assert_eq!(waits(&mut r, &[(false, 999)]), [after(400)]);
    }

    #[test]
    fn always_restarts_after_a_clean_exit_too() {
        let mut r = restarts(RestartPolicy::Always, 100, 1000);
        assert_eq!(r.after(true, Duration::ZERO), after(100));
    }

    #[test]
    fn on_failure_restarts_only_what_failed() {
        let mut r = restarts(RestartPolicy::OnFailure, 100, 1000);
        assert_eq!(r.after(false, Duration::ZERO), after(100));
        assert_eq!(
            r.after(true, Duration::ZERO),
            AfterRun::End(AllocationPhase::Stopped)
        );
    }

    #[test]
    fn never_ends_it_stopped_or_failed_by_how_it_ended() {
        let mut r = restarts(RestartPolicy::Never, 100, 1000);
        assert_eq!(
            r.after(true, Duration::ZERO),
            AfterRun::End(AllocationPhase::Stopped)
        );
        assert_eq!(
            r.after(false, Duration::ZERO),
            AfterRun::End(AllocationPhase::Failed)
        );
    }

    #[test]
    fn an_initial_wait_above_the_max_is_used_once_then_capped() {
        // Validation refuses it in specs; the policy still never loops on it.
        let mut r = restarts(RestartPolicy::Always, 2000, 1000);
        assert_eq!(
            waits(&mut r, &[(false, 0), (false, 0)]),
            [after(2000), after(1000)]
        );
    }
}
