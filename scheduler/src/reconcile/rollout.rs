//! Rollouts: when a job's new replicas have failed, how far the rollout may
//! move this pass, and what its record says afterwards.
//!
//! Pure functions of the job, its rollout and counts of its replicas; the
//! job's pass (`JobPlan::plan`) applies what they decide. A rollout moves in
//! one of three modes: held (failed without a rollback, or paused: only
//! replace what was lost), canary (an update waiting on its first replicas),
//! or rolling (replace old with current within `max_surge` and
//! `max_unavailable`, which is also how a job without a rollout keeps its
//! count).

use super::is_healthy;
use crate::state::{AllocState, Allocation, HealthState, Job, Rollout, RolloutKind, RolloutState};
use drover_proto::quantity::Duration;

/// How a job's replicas may move this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A failed rollout without a rollback, or a paused one: replace what
    /// the job lost and honour a scale-down, nothing more.
    Held,
    /// An update waiting on `count` canaries before it is promoted.
    Canary { count: u32 },
    /// Old replicas replaced by current ones within the bounds.
    Rolling,
}

/// The mode of `job` this pass; `active` is its rollout in progress, if any.
pub(super) fn mode(job: &Job, active: Option<&Rollout>) -> Mode {
    let failed_held = job.rollout.as_ref().is_some_and(|r| {
        r.version == job.current
            && r.generation == job.generation
            && r.state == RolloutState::Failed
    });
    let paused = active.is_some_and(|r| r.state == RolloutState::Paused);
    if failed_held || paused {
        Mode::Held
    } else if active.is_some_and(|r| !r.promoted) {
        Mode::Canary {
            count: job.current_spec().update.canary.min(job.replicas),
        }
    } else {
        Mode::Rolling
    }
}

/// What a pass decides from: the job's replica count and its allocations
/// that should run, current (`cur`) and old, how many of the current ones
/// are healthy, how many old ones are still stopping, and the surge bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub replicas: u32,
    pub cur: u32,
    pub old: u32,
    pub healthy_cur: u32,
    pub stopping: u32,
    pub surge: u32,
}

/// What to do this pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Step {
    /// New current replicas to place.
    pub place: u32,
    /// They are canaries.
    pub canary: bool,
    /// Stop old replicas while enough stay available.
    pub stop_old: bool,
    /// Current replicas over the count, to stop.
    pub scale_down: u32,
}

pub(super) fn step(mode: Mode, c: &Counts) -> Step {
    let n = c.replicas;
    let over = c.cur.saturating_sub(n);
    match mode {
        Mode::Held => Step {
            place: n.saturating_sub(c.cur + c.old).min(n.saturating_sub(c.cur)),
            scale_down: over,
            ..Step::default()
        },
        // The canaries, and replacements for anything lost meanwhile.
        Mode::Canary { count } => Step {
            place: count
                .saturating_sub(c.cur)
                .max(n.saturating_sub(c.cur + c.old)),
            canary: true,
            ..Step::default()
        },
        // Old replicas told to stop still run until their grace period
        // ends; where the job waits for them (`update.wait_for_stop`), they
        // count against the surge bound until they are gone.
        Mode::Rolling => Step {
            place: n
                .saturating_sub(c.cur)
                .min((n + c.surge).saturating_sub(c.cur + c.old + c.stopping)),
            stop_old: true,
            scale_down: over,
            ..Step::default()
        },
    }
}

/// The rollout's record after this pass: its progress, and whether its
/// canaries now wait for promotion or it has succeeded.
pub(super) fn advance(r: &mut Rollout, mode: Mode, c: &Counts, job: &str, now_ms: i64) {
    if c.healthy_cur > r.healthy {
        r.healthy = c.healthy_cur;
        r.progress_at_ms = now_ms;
    }
    let n = c.replicas;
    match mode {
        Mode::Held => {}
        Mode::Canary { count } => {
            if c.healthy_cur >= count && r.state == RolloutState::Running {
                r.state = RolloutState::WaitingPromotion;
                r.reason =
                    format!("{count} canary replica(s) healthy: run `drover job promote {job}`");
            }
        }
        Mode::Rolling => {
            if c.cur == n && c.healthy_cur >= n && c.old == 0 {
                r.state = RolloutState::Succeeded;
                r.finished_at_ms = Some(now_ms);
                r.reason = match r.kind {
                    RolloutKind::Update => {
                        format!("all {n} replica(s) of version {} healthy", r.version)
                    }
                    RolloutKind::Rollback => format!("{}; done", r.reason),
                    RolloutKind::Restart => format!("all {n} replica(s) restarted"),
                };
            }
        }
    }
}

/// Why the rollout `r` of `job` has failed, if it has: a replica it placed
/// failed its health check, crashed or was not healthy within
/// `healthy_deadline`, or the rollout made no progress within
/// `progress_deadline` (waiting for promotion is not a lack of progress).
pub(super) fn failure(job: &Job, r: &Rollout, cur: &[&Allocation], now_ms: i64) -> Option<String> {
    let update = &job.current_spec().update;
    for a in cur.iter().filter(|a| a.created_at_ms >= r.started_at_ms) {
        let what = format!("replica {} of version {}", a.name, a.version);
        if !a.health_detail.is_empty() {
            return Some(format!(
                "{what} failed its health check: {}",
                a.health_detail
            ));
        }
        let detail = &a.reason;
        if a.health == HealthState::Unhealthy {
            return Some(format!("{what} failed its health check: {detail}"));
        }
        if a.state == AllocState::Failed || a.restarts > 0 {
            return Some(format!("{what} crashed: {detail}"));
        }
        let age = now_ms - a.created_at_ms;
        if !is_healthy(job, a, now_ms, Duration(0)) && age > update.healthy_deadline.millis() as i64
        {
            return Some(format!(
                "{what} was not healthy within {}",
                update.healthy_deadline
            ));
        }
    }
    let waiting = r.state == RolloutState::WaitingPromotion;
    if !waiting && now_ms - r.progress_at_ms > update.progress_deadline.millis() as i64 {
        return Some(format!("no progress within {}", update.progress_deadline));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, State};

    fn c(replicas: u32, cur: u32, old: u32, healthy_cur: u32, stopping: u32) -> Counts {
        Counts {
            replicas,
            cur,
            old,
            healthy_cur,
            stopping,
            surge: 1,
        }
    }

    #[test]
    fn held_replaces_only_what_was_lost_and_honours_a_scale_down() {
        let s = step(Mode::Held, &c(4, 2, 1, 2, 0));
        assert_eq!(
            s,
            Step {
                place: 1,
                ..Step::default()
            },
            "one replica lost, none old stopped"
        );
        assert_eq!(step(Mode::Held, &c(4, 6, 0, 6, 0)).scale_down, 2);
        assert_eq!(step(Mode::Held, &c(4, 0, 4, 0, 0)).place, 0, "no move on");
    }

    #[test]
    fn canaries_come_first_then_only_replacements_for_what_was_lost() {
        let canary = Mode::Canary { count: 1 };
        let s = step(canary, &c(4, 0, 4, 0, 0));
        assert_eq!((s.place, s.canary, s.stop_old), (1, true, false));
        assert_eq!(step(canary, &c(4, 1, 4, 1, 0)).place, 0, "waits");
        assert_eq!(step(canary, &c(4, 0, 2, 0, 0)).place, 2, "two lost");
    }

    #[test]
    fn rolling_stays_within_the_surge_counting_what_still_stops() {
        let s = step(Mode::Rolling, &c(4, 0, 4, 0, 0));
        assert_eq!((s.place, s.stop_old), (1, true));
        assert_eq!(step(Mode::Rolling, &c(4, 1, 3, 1, 1)).place, 0);
        assert_eq!(step(Mode::Rolling, &c(4, 1, 3, 1, 0)).place, 1);
        assert_eq!(step(Mode::Rolling, &c(4, 5, 0, 5, 0)).scale_down, 1);
        assert_eq!(
            step(Mode::Rolling, &c(4, 4, 0, 4, 0)),
            Step {
                stop_old: true,
                ..Step::default()
            }
        );
    }

    fn job(s: &mut State, yaml: &str) -> Job {
        let r = s.apply(
            s.last_index + 1,
            &Command::SubmitJob {
                request_id: String::new(),
                spec: Box::new(drover_proto::spec::from_yaml(yaml).unwrap()),
                at_ms: 1_000,
            },
        );
        assert!(r.ok, "{r:?}");
        s.jobs["web"].clone()
    }

    const WEB: &str = "name: web\nreplicas: 2\nimage: oci:/x:v1\n\
                       health: {tcp: {port: 80}, interval: 1s, timeout: 1s}\n\
                       update: {canary: 1, healthy_deadline: 10s, progress_deadline: 30s}\n";

    #[test]
    fn the_record_shows_progress_canaries_waiting_and_success() {
        let mut s = State::default();
        let j = job(&mut s, WEB);
        let mut r = j.rollout.clone().unwrap();
        advance(
            &mut r,
            Mode::Canary { count: 1 },
            &c(2, 1, 2, 1, 0),
            "web",
            5_000,
        );
        assert_eq!((r.healthy, r.progress_at_ms), (1, 5_000));
        assert_eq!(r.state, RolloutState::WaitingPromotion);
        assert!(r.reason.contains("drover job promote web"), "{}", r.reason);
        let mut r = j.rollout.clone().unwrap();
        advance(&mut r, Mode::Rolling, &c(2, 2, 1, 2, 0), "web", 6_000);
        assert_eq!(r.state, RolloutState::Running, "an old one still runs");
        advance(&mut r, Mode::Rolling, &c(2, 2, 0, 2, 0), "web", 7_000);
        assert_eq!(r.state, RolloutState::Succeeded);
        assert_eq!(r.finished_at_ms, Some(7_000));
        assert_eq!(r.reason, "all 2 replica(s) of version 1 healthy");
        let before = j.rollout.clone().unwrap();
        let mut held = before.clone();
        advance(&mut held, Mode::Held, &c(2, 0, 0, 0, 0), "web", 8_000);
        assert_eq!(held, before);
    }

    #[test]
    fn failure_names_the_replica_and_why() {
        let mut s = State::default();
        let j = job(&mut s, WEB);
        let r = j.rollout.clone().unwrap();
        let alloc = |f: &dyn Fn(&mut Allocation)| {
            let mut a = Allocation {
                id: "a1".into(),
                name: "web-0".into(),
                job: "web".into(),
                version: 1,
                replica: 0,
                node: "n".into(),
                desired: crate::state::Desired::Run,
                state: AllocState::Running,
                pid: 1,
                exit_code: None,
                reason: String::new(),
                desired_reason: String::new(),
                restarts: 0,
                cpu_millis: 0,
                memory_bytes: 0,
                disk_bytes: 0,
                created_at_ms: 1_000,
                updated_at_ms: 1_000,
                generation: 0,
                health: HealthState::Unknown,
                running_since_ms: Some(1_000),
                healthy_since_ms: None,
                canary: false,
                ip: String::new(),
                health_detail: String::new(),
                restarting_at_ms: 0,
                killed_at_grace: false,
            };
            f(&mut a);
            a
        };
        let check = alloc(&|a| a.health_detail = "GET / answered 500".into());
        assert_eq!(
            failure(&j, &r, &[&check], 2_000).unwrap(),
            "replica web-0 of version 1 failed its health check: GET / answered 500"
        );
        let crashed = alloc(&|a| {
            a.state = AllocState::Failed;
            a.reason = "exited with code 2".into();
        });
        assert_eq!(
            failure(&j, &r, &[&crashed], 2_000).unwrap(),
            "replica web-0 of version 1 crashed: exited with code 2"
        );
        let slow = alloc(&|_| {});
        assert_eq!(
            failure(&j, &r, &[&slow], 5_000),
            None,
            "within the deadline"
        );
        assert_eq!(
            failure(&j, &r, &[&slow], 12_000).unwrap(),
            "replica web-0 of version 1 was not healthy within 10s"
        );
        // An older replica does not fail a rollout that started after it.
        let old = alloc(&|a| {
            a.created_at_ms = 0;
            a.state = AllocState::Failed;
        });
        assert_eq!(failure(&j, &r, &[&old], 2_000), None);
        assert_eq!(
            failure(&j, &r, &[], 40_000).unwrap(),
            "no progress within 30s"
        );
        let mut waiting = r.clone();
        waiting.state = RolloutState::WaitingPromotion;
        assert_eq!(
            failure(&j, &waiting, &[], 40_000),
            None,
            "waiting is not stuck"
        );
    }
}
