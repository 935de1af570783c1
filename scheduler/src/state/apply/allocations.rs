//! Applying the commands that change allocations: placing, stopping, and
//! what nodes report of them.

use super::*;

/// What a placement command checks each new allocation against, counted
/// once per command over the allocations of the jobs it places for (not
/// once per allocation over all of them), and kept up as it places.
#[derive(Default)]
struct Placed {
    /// (job, version, generation, replica) of allocations wanted running.
    slots: std::collections::HashSet<(String, u64, u64, u32)>,
    /// (job, version, generation, node): how many are wanted running there.
    per_node: std::collections::HashMap<(String, u64, u64, String), usize>,
    /// (job, version, generation): how many are wanted running and not ended.
    live: std::collections::HashMap<(String, u64, u64), u32>,
}

impl Placed {
    fn count(&mut self, a: &Allocation) {
        if a.desired != Desired::Run {
            return;
        }
        let run = (a.job.clone(), a.version, a.generation);
        self.slots
            .insert((a.job.clone(), a.version, a.generation, a.replica));
        *self
            .per_node
            .entry((a.job.clone(), a.version, a.generation, a.node.clone()))
            .or_default() += 1;
        if !a.state.is_terminal() {
            *self.live.entry(run).or_default() += 1;
        }
    }
}

impl State {
    /// Whether `job`'s constraints hold on `node` and it runs fewer than
    /// `max_per_node` replicas of the version `n` places.
    fn placement_rules_allow(
        &self,
        job: &Job,
        node: &Node,
        n: &NewAllocation,
        placed: &Placed,
    ) -> bool {
        let spec = job.current_spec();
        if !spec.constraints.is_empty() {
            let attributes = node.attributes();
            let holds = spec
                .constraints
                .iter()
                .all(|c| c.matcher().is_ok_and(|m| m.matches(&attributes)));
            if !holds {
                return false;
            }
        }
        let limit = spec.per_node_limit();
        if limit > 0 {
            let key = (n.job.clone(), n.version, n.generation, n.node.clone());
            let there = placed.per_node.get(&key).copied().unwrap_or(0);
            if there >= limit as usize {
                return false;
            }
        }
        true
    }

    pub(super) fn place(&mut self, allocations: &[NewAllocation], at_ms: i64) -> CommandResult {
        let mut placed = 0;
        let mut touched_jobs = BTreeSet::new();
        let jobs: BTreeSet<&str> = allocations.iter().map(|n| n.job.as_str()).collect();
        let mut counted = Placed::default();
        for a in self.allocations.values() {
            if jobs.contains(a.job.as_str()) {
                counted.count(a);
            }
        }
        for n in allocations {
            // Refuse what no longer makes sense: the reconciler may have planned on an
            // older state than this one.
            let Some(job) = self.jobs.get(&n.job) else {
                continue;
            };
            if job.stopped || job.current != n.version || job.generation != n.generation {
                continue;
            }
            // A batch job runs no more than its parallelism, nor more than
            // the completions still needed, nor anything once its run ended.
            if job.current_spec().job_type == JobType::Batch {
                let spec = job.current_spec();
                let run = job.batch_run();
                let succeeded = run.map_or(0, |r| r.succeeded);
                let room = spec
                    .parallelism()
                    .min(spec.completions().saturating_sub(succeeded));
                let live = counted
                    .live
                    .get(&(n.job.clone(), n.version, n.generation))
                    .copied()
                    .unwrap_or(0);
                if job.batch_ended().is_some() || live >= room {
                    continue;
                }
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
            // Or its agent came back without a volume the job mounts.
            let volumes_there = job.current_spec().volumes.iter().all(|v| {
                node.volumes
                    .get(&v.name)
                    .is_some_and(|read_only| v.read_only || !read_only)
            });
            if !volumes_there {
                continue;
            }
            // Or it was relabelled, or took other replicas meanwhile.
            if !self.placement_rules_allow(job, node, n, &counted) {
                continue;
            }
            let slot = (n.job.clone(), n.version, n.generation, n.replica);
            if counted.slots.contains(&slot) {
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
                    killed_at_grace: false,
                    restarts: 0,
                    cpu_millis: spec.resources.cpu.millis(),
                    memory_bytes: spec.resources.memory.bytes(),
                    disk_bytes: spec.resources.disk.map_or(0, |d| d.bytes()),
                    created_at_ms: at_ms,
                    updated_at_ms: at_ms,
                },
            );
            counted.count(&self.allocations[&n.id]);
            self.events.push(|| {
                let canary = if n.canary { " as a canary" } else { "" };
                Event::new(
                    Kind::AllocPlaced,
                    at_ms,
                    format!(
                        "{}-{} placed on {}{canary} (version {})",
                        n.job, n.replica, n.node, n.version
                    ),
                )
                .job(&n.job, n.version)
                .alloc(&n.id)
                .node(&n.node)
            });
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
    pub(super) fn forget_old_allocations(&mut self, job: &str) {
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

    pub(super) fn stop_allocations(
        &mut self,
        ids: &[String],
        reason: &str,
        at_ms: i64,
    ) -> CommandResult {
        let mut count = 0;
        for id in ids {
            if let Some(a) = self.allocations.get_mut(id) {
                if a.desired == Desired::Run {
                    a.desired = Desired::Stop;
                    a.desired_reason = reason.to_string();
                    a.updated_at_ms = at_ms;
                    self.events.push(|| {
                        let kind = if reason.starts_with(crate::reconcile::PREEMPTED) {
                            Kind::AllocEvicted
                        } else {
                            Kind::AllocStopping
                        };
                        Event::new(kind, at_ms, format!("{} asked to stop: {reason}", a.name))
                            .job(&a.job, a.version)
                            .alloc(&a.id)
                            .node(&a.node)
                    });
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

    pub(super) fn report(
        &mut self,
        node: &str,
        reports: &[AllocationReport],
        at_ms: i64,
    ) -> CommandResult {
        let mut count = 0;
        // (job, version, generation, succeeded): allocations that ended.
        let mut ends: Vec<(String, u64, u64, bool)> = Vec::new();
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
            if !a.state.is_terminal() && r.state.is_terminal() {
                // Exit 0 is a success however it came; any other end is a
                // failure unless the replica was asked to stop.
                let succeeded = r.state == AllocState::Stopped && r.exit_code == Some(0);
                if succeeded || a.desired == Desired::Run {
                    ends.push((a.job.clone(), a.version, a.generation, succeeded));
                }
            }
            let changed = a.state != r.state
                || a.pid != r.pid
                || a.exit_code != r.exit_code
                || a.restarts != r.restarts
                || a.health != r.health
                || a.ip != r.ip
                || a.health_detail != r.health_detail
                || a.restarting_at_ms != r.restarting_at_ms
                || a.killed_at_grace != r.killed_at_grace
                || (a.reason != r.reason && !r.reason.is_empty());
            if !changed {
                continue;
            }
            let new_run = r.state == AllocState::Running
                && (a.state != AllocState::Running || a.pid != r.pid);
            if self.events.is_on() {
                for e in report_events(a, r, new_run, at_ms) {
                    self.events.push(|| e);
                }
            }
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
            a.killed_at_grace = r.killed_at_grace;
            a.updated_at_ms = at_ms;
            count += 1;
        }
        for (job, version, generation, succeeded) in ends {
            if let Some(j) = self.jobs.get_mut(&job) {
                j.count_batch_end(version, generation, succeeded, at_ms);
            }
        }
        CommandResult {
            count,
            ..CommandResult::ok(count > 0)
        }
    }
}

/// What a node's report `r` of allocation `a` (as it was before) says
/// happened to it.
fn report_events(a: &Allocation, r: &AllocationReport, new_run: bool, at_ms: i64) -> Vec<Event> {
    let mut events = Vec::new();
    let event = |kind, message: String| {
        Event::new(kind, at_ms, format!("{}: {message}", a.name))
            .job(&a.job, a.version)
            .alloc(&a.id)
            .node(&a.node)
    };
    let oom = r.reason == "oom-killed"
        && (a.reason != r.reason || r.restarts > a.restarts || r.state.is_terminal());
    let ended = !a.state.is_terminal() && r.state.is_terminal();
    if oom && (r.restarts > a.restarts || ended) {
        events.push(event(
            Kind::AllocOomKilled,
            "killed for using more memory than its limit".into(),
        ));
    } else if r.restarts > a.restarts {
        let why = if r.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.reason)
        };
        events.push(event(
            Kind::AllocRestarted,
            format!("restarted{why}: restart {}", r.restarts),
        ));
    }
    if new_run {
        let pid = if r.pid > 0 {
            format!(" as pid {}", r.pid)
        } else {
            String::new()
        };
        events.push(event(Kind::AllocStarted, format!("running{pid}")));
    }
    let health = if r.state == AllocState::Running {
        r.health
    } else {
        HealthState::Unknown
    };
    if health != a.health || (new_run && health != HealthState::Unknown) {
        match health {
            HealthState::Healthy => events.push(event(Kind::AllocHealthy, "healthy".into())),
            HealthState::Unhealthy => {
                let detail = if r.health_detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.health_detail)
                };
                events.push(event(Kind::AllocUnhealthy, format!("unhealthy{detail}")))
            }
            HealthState::Unknown => {}
        }
    }
    if ended && !oom {
        let code = r
            .exit_code
            .map(|c| format!(" with exit code {c}"))
            .unwrap_or_default();
        let why = if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reason)
        };
        let (kind, word) = match r.state {
            AllocState::Stopped => (Kind::AllocStopped, "stopped"),
            _ => (Kind::AllocFailed, "failed"),
        };
        events.push(event(kind, format!("{word}{code}{why}")));
    }
    events
}
