//! `State::apply`: how each command changes the state.

use super::Refusal;
use super::*;
use drover_proto::spec::OnDisconnect;
use std::collections::BTreeSet;

/// How long a client request id is remembered for de-duplication: a retry
/// within this window (by the CLI, or by a user re-running a command that
/// timed out) applies once.
const REQUEST_WINDOW_MS: i64 = 10 * 60 * 1000;
/// The most request ids remembered, whatever their age (a memory bound: at
/// a sustained 10,000 writes/s the window shrinks to 20 s, still longer than
/// any automatic retry).
const REQUEST_MEMORY: usize = 200_000;
/// How many ended allocations of a job are kept for `alloc ls --all`.
const ENDED_ALLOCATIONS_KEPT: usize = 20;

impl State {
    /// Apply one committed command at raft log `index`. Deterministic: no clocks, no I/O.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        self.last_index = index;
        let (request_id, request_at_ms) = match cmd {
            Command::SubmitJob {
                request_id, at_ms, ..
            }
            | Command::StopJob {
                request_id, at_ms, ..
            }
            | Command::ScaleJob {
                request_id, at_ms, ..
            }
            | Command::RollbackJob {
                request_id, at_ms, ..
            }
            | Command::PromoteJob {
                request_id, at_ms, ..
            }
            | Command::PauseJob {
                request_id, at_ms, ..
            }
            | Command::RestartJob {
                request_id, at_ms, ..
            } => (Some(request_id.as_str()).filter(|r| !r.is_empty()), *at_ms),
            _ => (None, 0),
        };
        if let Some(id) = request_id {
            if let Some(done) = self.requests.get(id) {
                return done.clone();
            }
        }
        let result = match cmd {
            Command::SubmitJob { spec, at_ms, .. } => self.submit_job(spec, *at_ms),
            Command::StopJob {
                name, purge, at_ms, ..
            } => self.stop_job(name, *purge, *at_ms),
            Command::RegisterNode {
                name,
                address,
                cpu_millis,
                memory_bytes,
                at_ms,
                cluster_cidr,
            } => self.register_node(
                name,
                address,
                *cpu_millis,
                *memory_bytes,
                *at_ms,
                cluster_cidr,
            ),
            Command::SetNodeStatus {
                name,
                status,
                at_ms,
            } => self.set_node_status(name, *status, *at_ms),
            Command::SetNodeNetwork { name, error, .. } => self.set_node_network(name, error),
            Command::PlaceAllocations { allocations, at_ms } => self.place(allocations, *at_ms),
            Command::StopAllocations { ids, reason, at_ms } => {
                self.stop_allocations(ids, reason, *at_ms)
            }
            Command::SetPendingReason { job, reason } => match self.jobs.get_mut(job) {
                Some(j) if j.pending_reason != *reason => {
                    j.pending_reason = reason.clone();
                    CommandResult::ok(true)
                }
                Some(_) => CommandResult::ok(false),
                None => CommandResult::refused(Refusal::NoJob(job.clone())),
            },
            Command::ReportAllocations {
                node,
                reports,
                at_ms,
            } => self.report(node, reports, *at_ms),
            Command::PurgeJob { name } => self.purge_job(name),
            Command::ScaleJob { name, replicas, .. } => self.scale_job(name, *replicas),
            Command::SetRollout { job, rollout } => self.set_rollout(job, rollout),
            Command::RollbackJob {
                name,
                to,
                reason,
                at_ms,
                expect,
                ..
            } => self.rollback_job(name, *to, reason, *at_ms, *expect),
            Command::PromoteJob { name, at_ms, .. } => self.promote_job(name, *at_ms),
            Command::PauseJob {
                name,
                paused,
                at_ms,
                ..
            } => self.pause_job(name, *paused, *at_ms),
            Command::RestartJob { name, at_ms, .. } => self.restart_job(name, *at_ms),
            Command::SetNodeSchedulable {
                name,
                schedulable,
                drain,
                at_ms,
            } => self.set_schedulable(name, *schedulable, *drain, *at_ms),
            Command::RemoveNode {
                name,
                reason,
                at_ms,
            } => self.remove_node(name, reason, *at_ms),
            Command::AclBootstrap { token } => match self.acl.bootstrap(token.clone()) {
                Ok(()) => CommandResult::ok(true),
                Err(e) => CommandResult::refused(Refusal::Conflict(e)),
            },
            Command::CreateAclToken { token } => match self.acl.create(token.clone()) {
                Ok(()) => CommandResult::ok(true),
                Err(e) => CommandResult::refused(Refusal::Conflict(e)),
            },
            Command::RevokeAclToken { accessor } => match self.acl.revoke(accessor) {
                Ok(a) => CommandResult {
                    note: a,
                    ..CommandResult::ok(true)
                },
                Err(e) => CommandResult::refused(Refusal::NotFound(e)),
            },
            Command::RotateCa {
                old_cert,
                new_cert,
                new_key,
                new_subject,
                min_phase_ms,
                at_ms,
            } => match &self.ca_rotation {
                Some(r) if r.phase != ca::Phase::Done => {
                    CommandResult::refused(Refusal::Conflict(format!(
                        "a CA rotation is under way (phase {}): let it finish first",
                        r.phase
                    )))
                }
                previous => {
                    // After a rotation the CA in force is its new one,
                    // whatever the proposing replica had loaded (it may lag).
                    let old_cert = previous
                        .as_ref()
                        .map(|r| r.new_cert.clone())
                        .unwrap_or_else(|| old_cert.clone());
                    self.ca_rotation = Some(ca::CaRotation {
                        phase: ca::Phase::Trust,
                        old_cert,
                        new_cert: new_cert.clone(),
                        new_key: new_key.clone(),
                        new_subject: new_subject.clone(),
                        since_index: index,
                        since_ms: *at_ms,
                        min_phase_ms: *min_phase_ms,
                    });
                    CommandResult::ok(true)
                }
            },
            Command::AdvanceCaRotation {
                from,
                new_subject,
                at_ms,
            } => match self.ca_rotation.as_mut() {
                Some(r)
                    if r.phase == *from
                        && r.new_subject == *new_subject
                        && r.phase != ca::Phase::Done =>
                {
                    r.phase = match r.phase {
                        ca::Phase::Trust => ca::Phase::Sign,
                        _ => ca::Phase::Done,
                    };
                    r.since_index = index;
                    r.since_ms = *at_ms;
                    CommandResult::ok(true)
                }
                _ => CommandResult::refused(Refusal::Conflict(
                    "the CA rotation is not in that phase any more".into(),
                )),
            },
            Command::Noop => CommandResult::ok(false),
            Command::Batch(cmds) => CommandResult {
                ok: true,
                batch: cmds.iter().map(|c| self.apply(index, c)).collect(),
                ..Default::default()
            },
        };
        if let Some(id) = request_id {
            self.remember_request(id, request_at_ms, &result);
        }
        result
    }

    /// Remembers a request's result for [`REQUEST_WINDOW_MS`] after `at_ms`
    /// (the leader's clock; see `Command::stamp`), and at most
    /// [`REQUEST_MEMORY`] of them.
    fn remember_request(&mut self, id: &str, at_ms: i64, result: &CommandResult) {
        // Snapshots from before times were kept have ids without times:
        // those are the oldest and go first.
        while self.request_at_ms.len() < self.request_order.len() {
            match self.request_order.pop_front() {
                Some(old) => {
                    self.requests.remove(&old);
                }
                None => break,
            }
        }
        self.requests.insert(id.to_string(), result.clone());
        self.request_order.push_back(id.to_string());
        self.request_at_ms.push_back(at_ms);
        while let (Some(&oldest), Some(old)) =
            (self.request_at_ms.front(), self.request_order.front())
        {
            let expired = at_ms - oldest > REQUEST_WINDOW_MS;
            if !expired && self.request_order.len() <= REQUEST_MEMORY {
                break;
            }
            self.requests.remove(old);
            self.request_order.pop_front();
            self.request_at_ms.pop_front();
        }
    }

    fn submit_job(&mut self, spec: &JobSpec, at_ms: i64) -> CommandResult {
        // The proposer validated; validate again so no replica ever holds a bad spec.
        if let Err(e) = drover_proto::spec::validate(spec) {
            return CommandResult::refused(Refusal::Invalid(e.to_string()));
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
            };
            job.rollout = Some(Rollout::start(
                &job,
                RolloutKind::Update,
                spec.update.canary == 0,
                at_ms,
            ));
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
        CommandResult {
            version,
            note: format!("submitted version {version}"),
            ..CommandResult::ok(true)
        }
    }

    fn scale_job(&mut self, name: &str, replicas: u32) -> CommandResult {
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
        let changed = job.replicas != replicas;
        job.replicas = replicas;
        CommandResult {
            version: job.current,
            note: format!("scaled to {replicas}"),
            ..CommandResult::ok(changed)
        }
    }

    fn set_rollout(&mut self, name: &str, rollout: &Rollout) -> CommandResult {
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

    fn rollback_job(
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
        job.rollout = Some(r);
        CommandResult {
            version: target,
            note: format!("rolling back from version {from} to version {target}"),
            ..CommandResult::ok(true)
        }
    }

    fn promote_job(&mut self, name: &str, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        match &mut job.rollout {
            Some(r) if !r.state.is_done() && !r.promoted => {
                r.promoted = true;
                r.state = RolloutState::Running;
                r.progress_at_ms = at_ms;
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

    fn pause_job(&mut self, name: &str, paused: bool, at_ms: i64) -> CommandResult {
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

    fn restart_job(&mut self, name: &str, at_ms: i64) -> CommandResult {
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
        CommandResult {
            version: job.current,
            note: format!("restarting every replica of version {}", job.current),
            ..CommandResult::ok(true)
        }
    }

    fn set_schedulable(
        &mut self,
        name: &str,
        schedulable: bool,
        drain: bool,
        at_ms: i64,
    ) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        let changed = node.schedulable != schedulable || node.draining != drain;
        node.schedulable = schedulable;
        node.draining = drain;
        node.updated_at_ms = at_ms;
        CommandResult::ok(changed)
    }

    fn stop_job(&mut self, name: &str, purge: bool, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(Refusal::NoJob(name.to_string()));
        };
        let changed = !job.stopped || (purge && !job.purge);
        job.stopped = true;
        job.purge |= purge;
        job.pending_reason = None;
        let ids: Vec<String> = self
            .job_allocations(name)
            .filter(|a| a.desired == Desired::Run)
            .map(|a| a.id.clone())
            .collect();
        let mut r = self.stop_allocations(&ids, "job stopped", at_ms);
        r.changed |= changed;
        r
    }

    fn register_node(
        &mut self,
        name: &str,
        address: &str,
        cpu_millis: u64,
        memory_bytes: u64,
        at_ms: i64,
        cluster_cidr: &str,
    ) -> CommandResult {
        if name.is_empty() {
            return CommandResult::refused(Refusal::Invalid("a node needs a name".into()));
        }
        // One range for the whole cluster: the first proposed wins.
        if self.cluster_cidr.is_empty() && !cluster_cidr.is_empty() {
            self.cluster_cidr = cluster_cidr.to_string();
        }
        let cluster_cidr = self.cluster_cidr.clone();
        let has_subnet = self.nodes.get(name).is_some_and(|n| !n.subnet.is_empty());
        let subnet = if has_subnet || cluster_cidr.is_empty() {
            None
        } else {
            let taken: Vec<&str> = self.nodes.values().map(|n| n.subnet.as_str()).collect();
            match super::subnet::next_free(&cluster_cidr, &taken) {
                Some(s) => Some(s),
                None => {
                    return CommandResult::refused(Refusal::Conflict(format!(
                        "no free /24 left in the cluster range {cluster_cidr} ({} nodes hold one): \
                         remove nodes that are gone with `drover node rm`",
                        taken.len()
                    )))
                }
            }
        };
        let node = self.nodes.entry(name.to_string()).or_insert_with(|| Node {
            name: name.to_string(),
            address: String::new(),
            cpu_millis: 0,
            memory_bytes: 0,
            status: NodeStatus::Ready,
            schedulable: true,
            draining: false,
            subnet: String::new(),
            network_error: String::new(),
            registered_at_ms: at_ms,
            updated_at_ms: at_ms,
        });
        node.address = address.to_string();
        node.cpu_millis = cpu_millis;
        node.memory_bytes = memory_bytes;
        node.status = NodeStatus::Ready;
        node.updated_at_ms = at_ms;
        if let Some(s) = subnet {
            node.subnet = s;
        }
        CommandResult {
            note: node.subnet.clone(),
            ..CommandResult::ok(true)
        }
    }

    fn remove_node(&mut self, name: &str, reason: &str, at_ms: i64) -> CommandResult {
        let Some(node) = self.nodes.get(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.status != NodeStatus::Down {
            return CommandResult::refused(Refusal::Conflict(format!(
                "node {name} is {}: only a node that is down can be removed (stop its agent first; a running agent registers again)",
                node.status.as_str()
            )));
        }
        self.nodes.remove(name);
        let mut count = 0;
        for a in self.allocations.values_mut().filter(|a| a.node == name) {
            if a.desired == Desired::Run {
                a.desired = Desired::Stop;
                a.desired_reason = format!("node removed: {reason}");
                a.updated_at_ms = at_ms;
                count += 1;
            }
            if !a.state.is_terminal() {
                a.state = AllocState::Failed;
                a.pid = 0;
            }
        }
        CommandResult {
            count,
            ..CommandResult::ok(true)
        }
    }

    fn set_node_status(&mut self, name: &str, status: NodeStatus, at_ms: i64) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.status == status {
            return CommandResult::ok(false);
        }
        node.status = status;
        node.updated_at_ms = at_ms;
        if status == NodeStatus::Down {
            // Its allocations are lost: the reconciler replaces them elsewhere. When the
            // node returns, its agent sees they are no longer desired and stops them.
            let jobs = &self.jobs;
            let keeps_running = |job: &str, version: u64| {
                jobs.get(job)
                    .and_then(|j| j.version(version))
                    .is_some_and(|v| v.spec.on_disconnect == OnDisconnect::KeepRunning)
            };
            for a in self.allocations.values_mut().filter(|a| a.node == name) {
                // Replicas that asked to keep running were not stopped by their
                // agent, so they must not be started elsewhere: they stay, and
                // count, until the node is back or removed.
                if keeps_running(&a.job, a.version) {
                    continue;
                }
                if a.desired == Desired::Run {
                    a.desired = Desired::Stop;
                    a.desired_reason = "node down: replaced".into();
                    a.updated_at_ms = at_ms;
                }
                if !a.state.is_terminal() {
                    a.state = AllocState::Failed;
                    a.pid = 0;
                }
            }
        }
        CommandResult::ok(true)
    }

    fn set_node_network(&mut self, name: &str, error: &str) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.network_error == error {
            return CommandResult::ok(false);
        }
        // Not `updated_at_ms`: that dates the node's status (how long it has been down).
        node.network_error = error.to_string();
        CommandResult::ok(true)
    }

    fn place(&mut self, allocations: &[NewAllocation], at_ms: i64) -> CommandResult {
        let mut placed = 0;
        let mut touched_jobs = BTreeSet::new();
        for n in allocations {
            // Refuse what no longer makes sense: the reconciler may have planned on an
            // older state than this one.
            let Some(job) = self.jobs.get(&n.job) else {
                continue;
            };
            if job.stopped || job.current != n.version || job.generation != n.generation {
                continue;
            }
            let Some(node) = self.nodes.get(&n.node) else {
                continue;
            };
            if node.status != NodeStatus::Ready || self.allocations.contains_key(&n.id) {
                continue;
            }
            // Its container network broke after the plan was made.
            let private = job.current_spec().network == drover_proto::spec::Network::Private;
            if private && !node.network_error.is_empty() {
                continue;
            }
            let slot_taken = self.allocations.values().any(|a| {
                a.job == n.job
                    && a.replica == n.replica
                    && a.version == n.version
                    && a.generation == n.generation
                    && a.desired == Desired::Run
            });
            if slot_taken {
                continue;
            }
            let spec = job.current_spec();
            self.allocations.insert(
                n.id.clone(),
                Allocation {
                    id: n.id.clone(),
                    name: format!("{}-{}", n.job, n.replica),
                    job: n.job.clone(),
                    version: n.version,
                    replica: n.replica,
                    node: n.node.clone(),
                    desired: Desired::Run,
                    state: AllocState::Pending,
                    pid: 0,
                    exit_code: None,
                    reason: String::new(),
                    desired_reason: String::new(),
                    generation: n.generation,
                    health: HealthState::Unknown,
                    running_since_ms: None,
                    healthy_since_ms: None,
                    canary: n.canary,
                    ip: String::new(),
                    health_detail: String::new(),
                    restarting_at_ms: 0,
                    restarts: 0,
                    cpu_millis: spec.resources.cpu.millis(),
                    memory_bytes: spec.resources.memory.bytes(),
                    created_at_ms: at_ms,
                    updated_at_ms: at_ms,
                },
            );
            touched_jobs.insert(n.job.clone());
            placed += 1;
        }
        for job in touched_jobs {
            self.forget_old_allocations(&job);
        }
        CommandResult {
            count: placed,
            ..CommandResult::ok(placed > 0)
        }
    }

    /// Keeps the history of ended allocations of a job bounded.
    fn forget_old_allocations(&mut self, job: &str) {
        let mut ended: Vec<(i64, String)> = self
            .job_allocations(job)
            .filter(|a| a.desired == Desired::Stop && a.state.is_terminal())
            .map(|a| (a.updated_at_ms, a.id.clone()))
            .collect();
        if ended.len() > ENDED_ALLOCATIONS_KEPT {
            ended.sort();
            for (_, id) in &ended[..ended.len() - ENDED_ALLOCATIONS_KEPT] {
                self.allocations.remove(id);
            }
        }
    }

    fn stop_allocations(&mut self, ids: &[String], reason: &str, at_ms: i64) -> CommandResult {
        let mut count = 0;
        for id in ids {
            if let Some(a) = self.allocations.get_mut(id) {
                if a.desired == Desired::Run {
                    a.desired = Desired::Stop;
                    a.desired_reason = reason.to_string();
                    a.updated_at_ms = at_ms;
                    // Even a replica no report has shown started may be
                    // starting on its node right now: it ends only when the
                    // node says so (the agent reports never-started ones as
                    // stopped; see `DesiredAllocations.stopping`). Replacing
                    // it sooner could run it twice.
                    count += 1;
                }
            }
        }
        CommandResult {
            count,
            ..CommandResult::ok(count > 0)
        }
    }

    fn report(&mut self, node: &str, reports: &[AllocationReport], at_ms: i64) -> CommandResult {
        let mut count = 0;
        for r in reports {
            let Some(a) = self.allocations.get_mut(&r.id) else {
                continue;
            };
            if a.node != node {
                continue;
            }
            // An ended allocation stays ended: a late report cannot revive it.
            if a.state.is_terminal() && !r.state.is_terminal() && a.desired == Desired::Stop {
                continue;
            }
            let changed = a.state != r.state
                || a.pid != r.pid
                || a.exit_code != r.exit_code
                || a.restarts != r.restarts
                || a.health != r.health
                || a.ip != r.ip
                || a.health_detail != r.health_detail
                || a.restarting_at_ms != r.restarting_at_ms
                || (a.reason != r.reason && !r.reason.is_empty());
            if !changed {
                continue;
            }
            let new_run = r.state == AllocState::Running
                && (a.state != AllocState::Running || a.pid != r.pid);
            if new_run {
                a.running_since_ms = Some(at_ms);
            } else if r.state != AllocState::Running {
                a.running_since_ms = None;
            }
            if r.health == HealthState::Healthy && r.state == AllocState::Running {
                if a.health != HealthState::Healthy || new_run {
                    a.healthy_since_ms = Some(at_ms);
                }
            } else {
                a.healthy_since_ms = None;
            }
            if !r.ip.is_empty() || r.state.is_terminal() {
                a.ip = r.ip.clone();
            }
            a.health = if r.state == AllocState::Running {
                r.health
            } else {
                HealthState::Unknown
            };
            a.state = r.state;
            a.pid = r.pid;
            a.exit_code = r.exit_code;
            a.restarts = r.restarts;
            if !r.reason.is_empty() {
                a.reason = r.reason.clone();
            }
            a.health_detail = r.health_detail.clone();
            a.restarting_at_ms = r.restarting_at_ms;
            a.updated_at_ms = at_ms;
            count += 1;
        }
        CommandResult {
            count,
            ..CommandResult::ok(count > 0)
        }
    }

    fn purge_job(&mut self, name: &str) -> CommandResult {
        let Some(job) = self.jobs.get(name) else {
            return CommandResult::ok(false);
        };
        let live = self.job_allocations(name).any(|a| !a.state.is_terminal());
        if !job.stopped || live {
            return CommandResult::refused(Refusal::Conflict(format!(
                "job {name:?} still has allocations"
            )));
        }
        self.jobs.remove(name);
        self.allocations.retain(|_, a| a.job != name);
        CommandResult::ok(true)
    }
}

#[cfg(test)]
mod tests;
