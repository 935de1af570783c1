//! Applying the commands that move rollouts: their progress, rollbacks,
//! promotion, pause and restarts.

use super::*;

impl State {
    pub(super) fn set_rollout(&mut self, name: &str, rollout: &Rollout) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        let current = job.rollout.as_ref();
        // Only the rollout in force may be updated: a stale controller's view is refused.
        let matches = current.is_some_and(|r| {
            r.version == rollout.version
                && r.generation == rollout.generation
                && r.started_at_ms == rollout.started_at_ms
        });
        if !matches || job.current != rollout.version || current.is_some_and(|r| r.state.is_done())
        {
            return CommandResult::refused(Refusal::Conflict("not the rollout in force".into()));
        }
        let before = current.map(|r| (r.state, r.healthy));
        let (kind, message) = match rollout.state {
            RolloutState::Succeeded => (
                Some(Kind::RolloutSucceeded),
                format!(
                    "rollout of version {} succeeded: {} healthy",
                    rollout.version, rollout.healthy
                ),
            ),
            RolloutState::Failed => (
                Some(Kind::RolloutFailed),
                format!(
                    "rollout of version {} failed: {}",
                    rollout.version, rollout.reason
                ),
            ),
            RolloutState::WaitingPromotion => (
                Some(Kind::RolloutWaitingPromotion),
                format!(
                    "version {}: canaries healthy, waiting for `drover job promote`",
                    rollout.version
                ),
            ),
            _ => (
                None,
                format!(
                    "version {}: {} of {} replicas healthy",
                    rollout.version, rollout.healthy, job.replicas
                ),
            ),
        };
        let kind = match kind {
            Some(k) if before.is_none_or(|(s, _)| s != rollout.state) => Some(k),
            _ if before.is_some_and(|(_, h)| rollout.healthy > h) => Some(Kind::RolloutProgressed),
            _ => None,
        };
        if let Some(kind) = kind {
            let at_ms = rollout.finished_at_ms.unwrap_or(rollout.progress_at_ms);
            self.events
                .push(|| Event::new(kind, at_ms, message).job(name, rollout.version));
        }
        match rollout.state {
            RolloutState::Succeeded => {
                job.stable_version = Some(rollout.version);
                if rollout.kind != RolloutKind::Rollback {
                    job.set_outcome(rollout.version, VersionOutcome::Succeeded);
                }
            }
            RolloutState::Failed if rollout.kind == RolloutKind::Update => job.set_outcome(
                rollout.version,
                VersionOutcome::Failed {
                    reason: rollout.reason.clone(),
                    rolled_back_to: None,
                },
            ),
            _ => {}
        }
        job.rollout = Some(rollout.clone());
        CommandResult::ok(true)
    }

    pub(super) fn rollback_job(
        &mut self,
        name: &str,
        to: Option<u64>,
        reason: &str,
        at_ms: i64,
        expect: Option<(u64, u64, i64)>,
    ) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        if let Some((version, generation, started)) = expect {
            let same = job.rollout.as_ref().is_some_and(|r| {
                r.version == version
                    && r.generation == generation
                    && r.started_at_ms == started
                    && !r.state.is_done()
            });
            if !same || job.stopped {
                return CommandResult::refused(Refusal::Conflict(
                    "the failed rollout is no longer in force".into(),
                ));
            }
        }
        let target = match to {
            Some(v) => v,
            None => match job.stable_version.filter(|v| *v != job.current) {
                Some(v) => v,
                None => match job
                    .versions
                    .iter()
                    .rev()
                    .map(|v| v.version)
                    .find(|v| *v < job.current)
                {
                    Some(v) => v,
                    None => {
                        return CommandResult::refused(Refusal::Conflict(format!(
                            "job {name:?} has no earlier version to roll back to"
                        )))
                    }
                },
            },
        };
        if job.version(target).is_none() {
            return CommandResult::refused(Refusal::NoVersion {
                job: name.to_string(),
                version: target,
            });
        }
        if target == job.current {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} already runs version {target}"
            )));
        }
        let spec = job.version(target).map(|v| v.spec.clone());
        if let Some(missing) = spec.and_then(|s| self.missing_mount(&s)) {
            return CommandResult::refused(Refusal::Conflict(format!(
                "version {target} of job {name:?} cannot run: {missing}"
            )));
        }
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        let from = job.current;
        // `reason` is set when the rollout controller rolls back a failed version.
        let prior = job.version(from).and_then(|v| v.outcome.clone());
        let outcome = match (reason.is_empty(), prior) {
            (false, _) => Some(VersionOutcome::Failed {
                reason: reason.to_string(),
                rolled_back_to: Some(target),
            }),
            (true, Some(VersionOutcome::Failed { reason, .. })) => Some(VersionOutcome::Failed {
                reason,
                rolled_back_to: Some(target),
            }),
            (true, Some(VersionOutcome::Succeeded)) => None,
            (true, _) => Some(VersionOutcome::RolledBack { to: target }),
        };
        if let Some(o) = outcome {
            job.set_outcome(from, o);
        }
        job.current = target;
        job.stopped = false;
        let mut r = Rollout::start(job, RolloutKind::Rollback, true, at_ms);
        r.reason = if reason.is_empty() {
            format!("rollback from version {from}")
        } else {
            format!("rollback from version {from}, which failed: {reason}")
        };
        self.events.push(|| {
            Event::new(
                Kind::RolloutRolledBack,
                at_ms,
                format!("rolling back from version {from} to version {target}{}", {
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                }),
            )
            .job(name, target)
        });
        job.rollout = Some(r);
        CommandResult {
            version: target,
            note: format!("rolling back from version {from} to version {target}"),
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn promote_job(&mut self, name: &str, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        match &mut job.rollout {
            Some(r) if !r.state.is_done() && !r.promoted => {
                r.promoted = true;
                r.state = RolloutState::Running;
                r.progress_at_ms = at_ms;
                let version = r.version;
                self.events.push(|| {
                    Event::new(
                        Kind::RolloutPromoted,
                        at_ms,
                        format!("version {version} promoted: the rollout goes on"),
                    )
                    .job(name, version)
                });
                CommandResult {
                    version: r.version,
                    note: format!("promoted version {}", r.version),
                    ..CommandResult::ok(true)
                }
            }
            _ => CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} has no canaries waiting for promotion"
            ))),
        }
    }

    pub(super) fn pause_job(&mut self, name: &str, paused: bool, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        match &mut job.rollout {
            Some(r) if !r.state.is_done() => {
                let was = r.state;
                r.state = match (paused, r.promoted) {
                    (true, _) => RolloutState::Paused,
                    (false, true) => RolloutState::Running,
                    (false, false) => RolloutState::Running,
                };
                if !paused {
                    // Time spent paused does not count against the progress deadline.
                    r.progress_at_ms = at_ms;
                }
                if was != r.state {
                    let (kind, word) = if paused {
                        (Kind::RolloutPaused, "paused")
                    } else {
                        (Kind::RolloutResumed, "resumed")
                    };
                    let version = r.version;
                    self.events.push(|| {
                        Event::new(kind, at_ms, format!("rollout of version {version} {word}"))
                            .job(name, version)
                    });
                }
                CommandResult {
                    version: r.version,
                    note: format!(
                        "rollout of version {} {}",
                        r.version,
                        if paused { "paused" } else { "resumed" }
                    ),
                    ..CommandResult::ok(was != r.state)
                }
            }
            _ => CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} has no rollout in progress"
            ))),
        }
    }

    pub(super) fn restart_job(&mut self, name: &str, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        if job.stopped {
            return CommandResult::refused(Refusal::Conflict(format!("job {name:?} is stopped")));
        }
        if let Some(r) = &job.rollout {
            if !r.state.is_done() && r.kind == RolloutKind::Update {
                let v = r.version;
                job.set_outcome(
                    v,
                    VersionOutcome::Superseded {
                        by: "a restart".into(),
                    },
                );
            }
        }
        job.generation += 1;
        job.rollout = Some(Rollout::start(job, RolloutKind::Restart, true, at_ms));
        let version = job.current;
        self.events.push(|| {
            Event::new(
                Kind::JobRestarted,
                at_ms,
                format!("restarting every replica of version {version}"),
            )
            .job(name, version)
        });
        CommandResult {
            version: job.current,
            note: format!("restarting every replica of version {}", job.current),
            ..CommandResult::ok(true)
        }
    }
}
