//! `State::apply`: how each command changes the state.

use super::*;
use std::collections::BTreeSet;

/// How many client request ids are remembered for de-duplication.
const REQUEST_MEMORY: usize = 10_000;
/// How many ended allocations of a job are kept for `alloc ls --all`.
const ENDED_ALLOCATIONS_KEPT: usize = 20;

impl State {
    /// Apply one committed command at raft log `index`. Deterministic: no clocks, no I/O.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        self.last_index = index;
        let request_id = match cmd {
            Command::SubmitJob { request_id, .. } | Command::StopJob { request_id, .. } => {
                Some(request_id.as_str()).filter(|r| !r.is_empty())
            }
            _ => None,
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
            } => self.register_node(name, address, *cpu_millis, *memory_bytes, *at_ms),
            Command::SetNodeStatus {
                name,
                status,
                at_ms,
            } => self.set_node_status(name, *status, *at_ms),
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
                None => CommandResult::refused(format!("no job {job:?}")),
            },
            Command::ReportAllocations {
                node,
                reports,
                at_ms,
            } => self.report(node, reports, *at_ms),
            Command::PurgeJob { name } => self.purge_job(name),
            Command::Noop => CommandResult::ok(false),
            Command::Batch(cmds) => CommandResult {
                ok: true,
                batch: cmds.iter().map(|c| self.apply(index, c)).collect(),
                ..Default::default()
            },
        };
        if let Some(id) = request_id {
            self.requests.insert(id.to_string(), result.clone());
            self.request_order.push_back(id.to_string());
            while self.request_order.len() > REQUEST_MEMORY {
                if let Some(old) = self.request_order.pop_front() {
                    self.requests.remove(&old);
                }
            }
        }
        result
    }

    fn submit_job(&mut self, spec: &JobSpec, at_ms: i64) -> CommandResult {
        // The proposer validated; validate again so no replica ever holds a bad spec.
        if let Err(e) = drover_proto::spec::validate(spec) {
            return CommandResult::refused(e.to_string());
        }
        match self.jobs.get_mut(&spec.name) {
            Some(job) => {
                let unchanged = job.current_spec() == spec;
                if unchanged && !job.stopped {
                    return CommandResult {
                        version: job.current,
                        ..CommandResult::ok(false)
                    };
                }
                if unchanged {
                    // Re-running a stopped job's spec starts it again, same version.
                    job.stopped = false;
                    job.purge = false;
                    return CommandResult {
                        version: job.current,
                        ..CommandResult::ok(true)
                    };
                }
                let version = job.versions.last().map(|v| v.version).unwrap_or(0) + 1;
                job.versions.push(JobVersion {
                    version,
                    spec: spec.clone(),
                    submitted_at_ms: at_ms,
                });
                job.current = version;
                job.replicas = spec.replicas;
                job.stopped = false;
                job.purge = false;
                job.submitted_at_ms = at_ms;
                CommandResult {
                    version,
                    ..CommandResult::ok(true)
                }
            }
            None => {
                self.jobs.insert(
                    spec.name.clone(),
                    Job {
                        name: spec.name.clone(),
                        versions: vec![JobVersion {
                            version: 1,
                            spec: spec.clone(),
                            submitted_at_ms: at_ms,
                        }],
                        current: 1,
                        replicas: spec.replicas,
                        stopped: false,
                        purge: false,
                        pending_reason: None,
                        submitted_at_ms: at_ms,
                    },
                );
                CommandResult {
                    version: 1,
                    ..CommandResult::ok(true)
                }
            }
        }
    }

    fn stop_job(&mut self, name: &str, purge: bool, at_ms: i64) -> CommandResult {
        let Some(job) = self.jobs.get_mut(name) else {
            return CommandResult::refused(format!("no job named {name:?}"));
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
    ) -> CommandResult {
        if name.is_empty() {
            return CommandResult::refused("a node needs a name");
        }
        let node = self.nodes.entry(name.to_string()).or_insert_with(|| Node {
            name: name.to_string(),
            address: String::new(),
            cpu_millis: 0,
            memory_bytes: 0,
            status: NodeStatus::Ready,
            schedulable: true,
            registered_at_ms: at_ms,
            updated_at_ms: at_ms,
        });
        node.address = address.to_string();
        node.cpu_millis = cpu_millis;
        node.memory_bytes = memory_bytes;
        node.status = NodeStatus::Ready;
        node.updated_at_ms = at_ms;
        CommandResult::ok(true)
    }

    fn set_node_status(&mut self, name: &str, status: NodeStatus, at_ms: i64) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(format!("no node named {name:?}"));
        };
        if node.status == status {
            return CommandResult::ok(false);
        }
        node.status = status;
        node.updated_at_ms = at_ms;
        if status == NodeStatus::Down {
            // Its allocations are lost: the reconciler replaces them elsewhere. When the
            // node returns, its agent sees they are no longer desired and stops them.
            for a in self.allocations.values_mut().filter(|a| a.node == name) {
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

    fn place(&mut self, allocations: &[NewAllocation], at_ms: i64) -> CommandResult {
        let mut placed = 0;
        let mut touched_jobs = BTreeSet::new();
        for n in allocations {
            // Refuse what no longer makes sense: the reconciler may have planned on an
            // older state than this one.
            let Some(job) = self.jobs.get(&n.job) else {
                continue;
            };
            if job.stopped || job.current != n.version || n.replica >= job.replicas {
                continue;
            }
            let Some(node) = self.nodes.get(&n.node) else {
                continue;
            };
            if node.status != NodeStatus::Ready || self.allocations.contains_key(&n.id) {
                continue;
            }
            let slot_taken = self.allocations.values().any(|a| {
                a.job == n.job
                    && a.replica == n.replica
                    && a.version == n.version
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
                    // Never started anywhere: nothing to wait for.
                    if a.state == AllocState::Pending {
                        a.state = AllocState::Stopped;
                    }
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
                || (a.reason != r.reason && !r.reason.is_empty());
            if !changed {
                continue;
            }
            a.state = r.state;
            a.pid = r.pid;
            a.exit_code = r.exit_code;
            a.restarts = r.restarts;
            if !r.reason.is_empty() {
                a.reason = r.reason.clone();
            }
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
            return CommandResult::refused(format!("job {name:?} still has allocations"));
        }
        self.jobs.remove(name);
        self.allocations.retain(|_, a| a.job != name);
        CommandResult::ok(true)
    }
}

#[cfg(test)]
mod tests;
