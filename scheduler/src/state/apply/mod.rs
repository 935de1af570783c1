//! `State::apply`: how each command changes the state. This module
//! dispatches and remembers request results; the changes themselves are by
//! topic in `jobs`, `rollouts`, `nodes` and `allocations`.

mod allocations;
mod jobs;
mod nodes;
mod rollouts;
mod secrets;

use super::events::{Event, Kind};
use super::Refusal;
use super::*;
use drover_proto::spec::{JobType, OnDisconnect, Overlap};
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
            }
            | Command::LaunchRun {
                request_id, at_ms, ..
            }
            | Command::PutSecret {
                request_id, at_ms, ..
            }
            | Command::DeleteSecret {
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
                volumes,
                disk_bytes,
                labels,
                facts,
            } => self.register_node(
                name,
                address,
                (*cpu_millis, *memory_bytes, *disk_bytes),
                (volumes, labels, facts),
                *at_ms,
                cluster_cidr,
            ),
            Command::SetNodeLabels {
                name,
                labels,
                at_ms,
            } => self.set_node_labels(name, labels, *at_ms),
            Command::SetNodeStatus {
                name,
                status,
                at_ms,
            } => self.set_node_status(name, *status, *at_ms),
            Command::SetNodeNetwork { name, error, at_ms } => {
                self.set_node_network(name, error, *at_ms)
            }
            Command::PlaceAllocations { allocations, at_ms } => self.place(allocations, *at_ms),
            Command::StopAllocations { ids, reason, at_ms } => {
                self.stop_allocations(ids, reason, *at_ms)
            }
            Command::SetPendingReason { job, reason, at_ms } => match self.jobs.get_mut(job) {
                Some(j) if j.pending_reason != *reason => {
                    j.pending_reason = reason.clone();
                    if let Some(why) = reason {
                        let version = j.current;
                        self.events.push(|| {
                            Event::new(Kind::JobPending, *at_ms, format!("cannot place: {why}"))
                                .job(job, version)
                        });
                    }
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
            Command::PurgeJob { name, at_ms } => self.purge_job(name, *at_ms),
            Command::ScaleJob {
                name,
                replicas,
                at_ms,
                ..
            } => self.scale_job(name, *replicas, *at_ms),
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
            Command::LaunchRun {
                name,
                scheduled_ms,
                at_ms,
                ..
            } => self.launch_run(name, *scheduled_ms, *at_ms),
            Command::PutSecret {
                kind,
                name,
                data,
                size,
                create,
                key_id,
                at_ms,
                ..
            } => self.put_secret(*kind, name, data, (*size, key_id), *create, *at_ms),
            Command::DeleteSecret { kind, name, .. } => self.delete_secret(*kind, name),
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
            Command::Restore {
                restored, at_ms, ..
            } => {
                // A restore in parts under way is superseded.
                self.restoring = None;
                self.restore(restored, *at_ms)
            }
            Command::RestorePart {
                restore,
                part,
                parts,
                restored,
                at_ms,
                ..
            } => self.restore_part(restore, *part, *parts, restored, *at_ms),
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
            Command::SetClusterVersion { version } => {
                let runs = self.cluster_version();
                if *version < runs {
                    CommandResult::refused(Refusal::Conflict(format!(
                        "the cluster runs at version {runs}: its version never goes back (to {version})"
                    )))
                } else {
                    self.cluster_version = *version;
                    CommandResult::ok(*version != runs)
                }
            }
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
}

#[cfg(test)]
mod tests;
