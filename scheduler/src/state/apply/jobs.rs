//! Applying the commands that change jobs: submit, scale, stop, purge.

use super::*;

impl State {
    pub(super) fn submit_job(&mut self, spec: &JobSpec, at_ms: i64) -> CommandResult {
        // The proposer validated; validate again so no replica ever holds a bad spec.
        if let Err(e) = drover_proto::spec::validate(spec) {
            return CommandResult::refused(Refusal::Invalid(e.to_string()));
        }
        // What it mounts must exist: a replica could not start without it.
        if let Some(missing) = self.missing_mount(spec) {
            return CommandResult::refused(Refusal::Invalid(missing));
        }
        // A published port is the same on every node: one job per port.
        if let Some(x) = &spec.expose {
            let clash = self.jobs.values().find(|j| {
                j.name != spec.name
                    && !j.stopped
                    && j.current_spec()
                        .expose
                        .as_ref()
                        .is_some_and(|o| o.port == x.port)
            });
            if let Some(other) = clash {
                return CommandResult::refused(Refusal::Invalid(format!(
                    "expose.port: {} is already published by job {:?}",
                    x.port, other.name
                )));
            }
        }
        let Some(job) = self.jobs.get_mut(&spec.name) else {
            let mut job = Job {
                name: spec.name.clone(),
                versions: vec![JobVersion {
                    version: 1,
                    spec: std::sync::Arc::new(spec.clone()),
                    submitted_at_ms: at_ms,
                    outcome: None,
                }],
                current: 1,
                replicas: spec.replicas,
                spec_replicas: spec.replicas,
                stopped: false,
                purge: false,
                pending_reason: None,
                submitted_at_ms: at_ms,
                generation: 0,
                stable_version: None,
                rollout: None,
                batch: None,
                periodic: None,
            };
            job.rollout = Some(Rollout::start(
                &job,
                RolloutKind::Update,
                spec.update.canary == 0,
                at_ms,
            ));
            self.events.push(|| {
                Event::new(
                    Kind::JobSubmitted,
                    at_ms,
                    format!("submitted: version 1, {} replicas", spec.replicas),
                )
                .job(&spec.name, 1)
            });
            self.events.push(|| {
                Event::new(Kind::RolloutStarted, at_ms, "rollout of version 1".into())
                    .job(&spec.name, 1)
            });
            self.jobs.insert(spec.name.clone(), job);
            return CommandResult {
                version: 1,
                note: format!("submitted version 1 ({} replicas)", spec.replicas),
                ..CommandResult::ok(true)
            };
        };
        // `replicas` is the count in force only when the user edits it: re-running a
        // spec whose `replicas` did not change keeps a count set by `job scale`.
        let replicas_edited = spec.replicas != job.spec_replicas;
        if replicas_edited {
            job.replicas = spec.replicas;
            job.spec_replicas = spec.replicas;
        }
        let mut unchanged = job.current_spec().clone();
        unchanged.replicas = spec.replicas;
        let same_version = unchanged == *spec;
        let was_stopped = job.stopped;
        job.stopped = false;
        job.purge = false;
        if same_version {
            if was_stopped {
                job.rollout = Some(Rollout::start(job, RolloutKind::Update, true, at_ms));
                // A batch job run again runs again from the start.
                job.batch = None;
            }
            let (name, current, replicas) = (&job.name, job.current, job.replicas);
            if was_stopped {
                self.events.push(|| {
                    Event::new(
                        Kind::JobStartedAgain,
                        at_ms,
                        format!("started again at version {current}"),
                    )
                    .job(name, current)
                });
            } else if replicas_edited {
                self.events.push(|| {
                    Event::new(Kind::JobScaled, at_ms, format!("scaled to {replicas}"))
                        .job(name, current)
                });
            }
            let note = match (was_stopped, replicas_edited) {
                (true, _) => format!("started again at version {}", job.current),
                (false, true) => format!(
                    "scaled to {} (version {} unchanged)",
                    job.replicas, job.current
                ),
                (false, false) => format!(
                    "unchanged (version {} is already the current spec)",
                    job.current
                ),
            };
            return CommandResult {
                version: job.current,
                note,
                ..CommandResult::ok(was_stopped || replicas_edited)
            };
        }
        if let Some(r) = &job.rollout {
            if !r.state.is_done() {
                let v = r.version;
                job.set_outcome(
                    v,
                    VersionOutcome::Superseded {
                        by: "a newer version".into(),
                    },
                );
            }
        }
        let version = job.versions.last().map(|v| v.version).unwrap_or(0) + 1;
        job.versions.push(JobVersion {
            version,
            spec: std::sync::Arc::new(spec.clone()),
            submitted_at_ms: at_ms,
            outcome: None,
        });
        job.current = version;
        job.submitted_at_ms = at_ms;
        let mut has_old = false;
        let mut in_use = std::collections::BTreeSet::new();
        for a in self.allocations.values().filter(|a| a.job == spec.name) {
            has_old |= a.desired == Desired::Run;
            in_use.insert(a.version);
        }
        let job = self.jobs.get_mut(&spec.name).expect("job exists");
        let promoted = spec.update.canary == 0 || !has_old;
        job.rollout = Some(Rollout::start(job, RolloutKind::Update, promoted, at_ms));
        job.prune_versions(&in_use);
        self.events.push(|| {
            Event::new(
                Kind::JobUpdated,
                at_ms,
                format!("version {version} submitted"),
            )
            .job(&spec.name, version)
        });
        self.events.push(|| {
            let canaries = match spec.update.canary {
                0 => String::new(),
                n if promoted => format!(" (no older replicas: {n} canaries not awaited)"),
                n => format!(", {n} canaries first"),
            };
            Event::new(
                Kind::RolloutStarted,
                at_ms,
                format!("rollout of version {version}{canaries}"),
            )
            .job(&spec.name, version)
        });
        CommandResult {
            version,
            note: format!("submitted version {version}"),
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn scale_job(&mut self, name: &str, replicas: u32, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        if replicas > 10_000 {
            return CommandResult::refused(Refusal::Invalid(format!(
                "replicas: {replicas} is more than the maximum of 10000"
            )));
        }
        if job.stopped {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} is stopped: run it again first"
            )));
        }
        match job.current_spec().job_type {
            JobType::Service => {}
            JobType::Batch => {
                return CommandResult::refused(Refusal::Conflict(format!(
                    "job {name:?} is a batch job: its `completions` and `parallelism` are in its spec (edit them and run it again)"
                )))
            }
            JobType::System => {
                return CommandResult::refused(Refusal::Conflict(format!(
                    "job {name:?} is a system job: it runs one replica on every eligible node (change its `constraints` to change where)"
                )))
            }
        }
        let changed = job.replicas != replicas;
        job.replicas = replicas;
        if changed {
            let version = job.current;
            self.events.push(|| {
                Event::new(Kind::JobScaled, at_ms, format!("scaled to {replicas}"))
                    .job(name, version)
            });
        }
        CommandResult {
            version: job.current,
            note: format!("scaled to {replicas}"),
            ..CommandResult::ok(changed)
        }
    }

    pub(super) fn launch_run(
        &mut self,
        name: &str,
        scheduled_ms: Option<i64>,
        at_ms: i64,
    ) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        if job.stopped {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} is stopped: run it again first"
            )));
        }
        let Some(overlap) = job.current_spec().schedule.as_ref().map(|s| s.overlap) else {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} is not a periodic batch job (it has no schedule; `drover job restart` runs a batch job again)"
            )));
        };
        // A firing already decided on (proposed twice, or by an older leader).
        if let Some(t) = scheduled_ms {
            if job.periodic.as_ref().is_some_and(|p| t <= p.last_ms) {
                return CommandResult::ok(false);
            }
        }
        let going = job.batch_run().is_some_and(|r| r.ended.is_none());
        let periodic = job.periodic.get_or_insert_with(Default::default);
        if let Some(t) = scheduled_ms {
            periodic.last_ms = t;
        }
        if going && overlap == Overlap::Skip {
            if scheduled_ms.is_none() {
                return CommandResult::refused(Refusal::Conflict(format!(
                    "a run of job {name:?} is still going (its overlap is skip): wait for it to end, or stop the job"
                )));
            }
            periodic.skipped += 1;
            return CommandResult {
                version: job.current,
                note: "skipped: the previous run is still going".into(),
                ..CommandResult::ok(true)
            };
        }
        periodic.runs += 1;
        let runs = periodic.runs;
        job.generation += 1;
        job.batch = Some(BatchRun {
            version: job.current,
            generation: job.generation,
            ..BatchRun::default()
        });
        job.rollout = Some(Rollout::start(job, RolloutKind::Restart, true, at_ms));
        let version = job.current;
        self.events.push(|| {
            let why = if scheduled_ms.is_some() {
                "on its schedule"
            } else {
                "launched by hand"
            };
            Event::new(
                Kind::JobRunStarted,
                at_ms,
                format!("run {runs} started ({why})"),
            )
            .job(name, version)
        });
        CommandResult {
            version: job.current,
            note: format!("run {runs} started"),
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn stop_job(&mut self, name: &str, purge: bool, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        let changed = !job.stopped || (purge && !job.purge);
        job.stopped = true;
        job.purge |= purge;
        job.pending_reason = None;
        if changed {
            let version = job.current;
            self.events.push(|| {
                let purge = if purge {
                    " (purged once its replicas end)"
                } else {
                    ""
                };
                Event::new(Kind::JobStopped, at_ms, format!("stopped{purge}")).job(name, version)
            });
        }
        let ids: Vec<String> = self
            .job_allocations(name)
            .filter(|a| a.desired == Desired::Run)
            .map(|a| a.id.clone())
            .collect();
        let mut r = self.stop_allocations(&ids, "job stopped", at_ms);
        r.changed |= changed;
        r
    }

    pub(super) fn purge_job(&mut self, name: &str, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get(name) else {
            return CommandResult::ok(false);
        };
        let live = self.job_allocations(name).any(|a| !a.state.is_terminal());
        if !job.stopped || live {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} still has allocations"
            )));
        }
        let version = job.current;
        self.jobs.remove(name);
        self.allocations.retain(|_, a| a.job != name);
        self.events.push(|| {
            Event::new(
                Kind::JobPurged,
                at_ms,
                "purged: forgotten with its history".into(),
            )
            .job(name, version)
        });
        CommandResult::ok(true)
    }

    /// Stages one part of a restore; the last part restores them all. A
    /// part already applied (proposed twice) changes nothing and answers
    /// as it did.
    pub(super) fn restore_part(
        &mut self,
        restore: &str,
        part: u32,
        parts: u32,
        piece: &crate::state::backup::Restored,
        at_ms: i64,
    ) -> CommandResult {
        use crate::state::backup::{Restored, Staged};
        if part >= parts {
            return CommandResult::refused(Refusal::Invalid(format!(
                "restore part {part} of {parts}: parts count from 0"
            )));
        }
        if let Some(s) = self
            .restoring
            .as_ref()
            .filter(|s| s.restore == restore && s.parts == parts && part < s.next)
        {
            let note = if s.next == parts && part + 1 == parts {
                s.note.clone()
            } else {
                format!(
                    "part {} of {parts} of restore {restore:?} was staged already",
                    part + 1
                )
            };
            return CommandResult {
                note,
                ..CommandResult::ok(false)
            };
        }
        if part == 0 {
            // A new restore drops one that never finished.
            self.restoring = Some(Staged {
                restore: restore.to_owned(),
                next: 0,
                parts,
                restored: Restored {
                    secrets_key_id: piece.secrets_key_id.clone(),
                    acl: crate::state::acl::Acl {
                        bootstrapped: piece.acl.bootstrapped,
                        tokens: Default::default(),
                    },
                    ..Restored::default()
                },
                note: String::new(),
            });
        }
        let Some(staged) = self
            .restoring
            .as_mut()
            .filter(|s| s.restore == restore && s.next == part && s.parts == parts)
        else {
            return CommandResult::refused(Refusal::Conflict(format!(
                "restore {restore:?} part {} of {parts} is out of order: another restore began since its first part; nothing of it was applied, start it again",
                part + 1
            )));
        };
        staged.restored.merge(piece);
        staged.next += 1;
        if staged.next < parts {
            return CommandResult {
                note: format!("staged part {} of {parts} of restore {restore:?}", part + 1),
                ..CommandResult::ok(true)
            };
        }
        let whole = std::mem::take(&mut staged.restored);
        let result = self.restore(&whole, at_ms);
        if let Some(s) = self.restoring.as_mut() {
            s.note = result.note.clone();
        }
        result
    }

    /// Puts back a saved snapshot's desired state (see `backup`). A replica
    /// running now keeps running where the restored job still has its
    /// version with the very same spec; every other stops (jobs the
    /// snapshot lacks are stopped and purged), and the controller places
    /// what the restored jobs need.
    pub(super) fn restore(
        &mut self,
        r: &crate::state::backup::Restored,
        at_ms: i64,
    ) -> CommandResult {
        let keeps = |a: &Allocation| {
            let now = self.jobs.get(&a.job).and_then(|j| j.version(a.version));
            let then = r.jobs.get(&a.job).and_then(|j| j.version(a.version));
            matches!((now, then), (Some(n), Some(t)) if n.spec == t.spec)
        };
        let stop: Vec<String> = self
            .allocations
            .values()
            .filter(|a| a.desired == Desired::Run && !keeps(a))
            .map(|a| a.id.clone())
            .collect();
        let mut result = self.stop_allocations(&stop, "replaced by a restored snapshot", at_ms);
        let gone: Vec<String> = self
            .jobs
            .keys()
            .filter(|n| !r.jobs.contains_key(*n))
            .cloned()
            .collect();
        for name in &gone {
            if let Some(job) = self.jobs.get_mut(name) {
                job.stopped = true;
                job.purge = true;
                job.pending_reason = None;
            }
        }
        for (name, job) in &r.jobs {
            let mut job = job.clone();
            // A rollout of the saved cluster's replicas does not go on
            // here: the controller compares what runs with the current
            // version afresh.
            job.rollout = None;
            job.pending_reason = None;
            self.jobs.insert(name.clone(), job);
        }
        self.secrets = r.secrets.clone();
        self.configs = r.configs.clone();
        self.secrets_key_id = r.secrets_key_id.clone();
        self.acl = r.acl.clone();
        result.changed = true;
        self.events.push(|| {
            Event::new(
                Kind::ClusterRestored,
                at_ms,
                format!(
                    "restored from a snapshot: {} jobs; {} replicas replaced, {} jobs removed",
                    r.jobs.len(),
                    stop.len(),
                    gone.len()
                ),
            )
        });
        result.note = format!(
            "restored {} jobs, {} secrets, {} configs, {} tokens; {} replicas replaced, {} jobs removed",
            r.jobs.len(),
            r.secrets.len(),
            r.configs.len(),
            r.acl.tokens.len(),
            stop.len(),
            gone.len()
        );
        result
    }
}
