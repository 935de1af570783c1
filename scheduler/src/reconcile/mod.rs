//! Reconciliation: what must change so the cluster matches the declared jobs.
//!
//! A pure function from the state and the time to a plan: allocations to
//! place and to stop, rollout progress to record, rollbacks to start, jobs
//! whose pending reason changed, and stopped jobs ready to be forgotten. The
//! controller runs it on the leader and proposes the plan as commands; the
//! state machine re-checks each command when it applies, so a plan made on a
//! slightly old state is harmless.
//!
//! Allocations of a job are *current* (the job's version and generation, on
//! a node that is not draining) or *old* (everything else it still runs).
//! Replacing old with current is a rolling update bounded like a Kubernetes
//! Deployment: never more than `replicas + max_surge` in total, never fewer
//! than `replicas - max_unavailable` healthy. An old replica is stopped only
//! when enough others are healthy; a current replica counts as healthy once
//! its check has passed (or, without a check, it has run) for
//! `min_healthy_time`. A new replica that crashes, fails its check, or is not
//! healthy within `healthy_deadline`, or a rollout that makes no progress
//! within `progress_deadline`, fails the rollout; with `auto_rollback` the
//! last stable version is rolled back in under the same bounds. The same
//! rules move replicas off a draining node and restore a scaled count.

mod kinds;
mod place;
mod preempt;
mod rollout;

pub use kinds::system_nodes;
pub use preempt::PREEMPTED;

use crate::placement::Candidate;
use crate::state::{
    AllocState, Allocation, Desired, HealthState, Job, NewAllocation, NodeStatus, Rollout,
    RolloutKind, RolloutState, State,
};
use drover_proto::quantity::Duration;
use drover_proto::spec::JobType;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which rollout: (version, generation, started_at_ms).
pub type RolloutId = (u64, u64, i64);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub place: Vec<NewAllocation>,
    /// (allocation id, reason)
    pub stop: Vec<(String, String)>,
    /// (job, new pending reason)
    pub pending: Vec<(String, Option<String>)>,
    pub purge: Vec<String>,
    /// (job, the rollout as it should now be recorded)
    pub rollouts: Vec<(String, Rollout)>,
    /// (job, version to return to, why)
    pub rollbacks: Vec<(String, u64, String, RolloutId)>,
    /// (periodic batch job, the firing due): runs to start.
    pub launch: Vec<(String, i64)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
            && self.stop.is_empty()
            && self.pending.is_empty()
            && self.purge.is_empty()
            && self.rollouts.is_empty()
            && self.rollbacks.is_empty()
            && self.launch.is_empty()
    }
}

/// Whether an allocation of `job` is healthy enough to count as available at `now_ms`.
/// `settle` is how long it must have been so (the new version's `min_healthy_time`).
pub fn is_healthy(job: &Job, a: &Allocation, now_ms: i64, settle: Duration) -> bool {
    if a.state != AllocState::Running || a.health == HealthState::Unhealthy {
        return false;
    }
    let checked = job
        .version(a.version)
        .is_some_and(|v| v.spec.health.is_some());
    let since = if checked {
        a.healthy_since_ms
    } else {
        a.running_since_ms
    };
    since.is_some_and(|t| now_ms - t >= settle.millis() as i64)
}

/// Computes the plan. `new_id` makes allocation ids (random in production).
pub fn reconcile(state: &State, now_ms: i64, new_id: &mut dyn FnMut() -> String) -> Plan {
    let mut plan = Plan::default();
    let usage = state.usage();
    let mut ports_by_node = host_ports(state);
    let mut candidates: Vec<Candidate> = state
        .nodes
        .values()
        .map(|n| {
            let u = usage.get(&n.name).copied().unwrap_or_default();
            Candidate {
                name: n.name.clone(),
                ready: n.status == NodeStatus::Ready,
                schedulable: n.schedulable && !n.draining,
                cpu_total: n.cpu_millis,
                memory_total: n.memory_bytes,
                cpu_used: u.cpu_millis,
                memory_used: u.memory_bytes,
                job_replicas: 0,
                version_replicas: 0,
                host_ports: ports_by_node.remove(n.name.as_str()).unwrap_or_default(),
                network_error: n.network_error.clone(),
                volumes: n.volumes.clone(),
                disk_total: n.disk_bytes,
                disk_used: u.disk_bytes,
                attributes: n.attributes(),
            }
        })
        .collect();
    let draining: BTreeSet<&str> = state
        .nodes
        .values()
        .filter(|n| n.draining)
        .map(|n| n.name.as_str())
        .collect();
    let no_network: BTreeSet<&str> = state
        .nodes
        .values()
        .filter(|n| !n.network_error.is_empty())
        .map(|n| n.name.as_str())
        .collect();

    // Each job's allocations, found once for the pass.
    let mut by_job: HashMap<&str, Vec<&Allocation>> = HashMap::new();
    for a in state.allocations.values() {
        by_job.entry(a.job.as_str()).or_default().push(a);
    }
    // Higher priorities first: they take the room there is, and what they
    // preempt is not taken by a job of lower priority in the same pass.
    let mut jobs: Vec<&Job> = state.jobs.values().collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.current_spec().priority));
    for job in jobs {
        let allocs = by_job.get(job.name.as_str()).map_or(&[][..], Vec::as_slice);
        if job.stopped {
            let ended = allocs.iter().all(|a| a.state.is_terminal());
            if job.purge && ended {
                plan.purge.push(job.name.clone());
            }
            continue;
        }
        JobPlan {
            state,
            job,
            allocs,
            now_ms,
            draining: &draining,
            no_network: &no_network,
        }
        .plan(&mut plan, &mut candidates, new_id);
    }
    plan
}

/// Ports bound on each node's own network: host-network replicas' ports, and
/// every published service (the mesh listens on each node).
fn host_ports(state: &State) -> BTreeMap<&str, BTreeSet<u16>> {
    let published: BTreeSet<u16> = state
        .jobs
        .values()
        .filter(|j| !j.stopped)
        .filter_map(|j| j.current_spec().expose.as_ref().map(|e| e.port as u16))
        .collect();
    let mut out: BTreeMap<&str, BTreeSet<u16>> = state
        .nodes
        .keys()
        .map(|n| (n.as_str(), published.clone()))
        .collect();
    for a in state.allocations.values().filter(|a| a.holds_resources()) {
        let Some(spec) = state
            .jobs
            .get(&a.job)
            .and_then(|j| j.version(a.version))
            .map(|v| &v.spec)
        else {
            continue;
        };
        if spec.network == drover_proto::spec::Network::Host {
            if let Some(ports) = out.get_mut(a.node.as_str()) {
                ports.extend(spec.ports.iter().map(|p| p.container as u16));
            }
        }
    }
    out
}

struct JobPlan<'a> {
    state: &'a State,
    job: &'a Job,
    /// The job's allocations.
    allocs: &'a [&'a Allocation],
    now_ms: i64,
    draining: &'a BTreeSet<&'a str>,
    /// Nodes whose container network is unavailable.
    no_network: &'a BTreeSet<&'a str>,
}

impl JobPlan<'_> {
    /// A replica that is not running on a node where it cannot start: a
    /// private-network one on a node without a working container network,
    /// or one mounting a host volume its node's agent no longer offers (as
    /// asked). It is replaced elsewhere (one that runs keeps running).
    fn stranded(&self, a: &Allocation) -> bool {
        if a.state == AllocState::Running {
            return false;
        }
        let Some(v) = self.job.version(a.version) else {
            return false;
        };
        let no_network = self.no_network.contains(a.node.as_str())
            && v.spec.network == drover_proto::spec::Network::Private;
        let no_volume = self.state.nodes.get(&a.node).is_some_and(|n| {
            v.spec.volumes.iter().any(|m| {
                n.volumes
                    .get(&m.name)
                    .is_none_or(|read_only| *read_only && !m.read_only)
            })
        });
        no_network || no_volume
    }

    fn plan(
        &self,
        plan: &mut Plan,
        candidates: &mut [Candidate],
        new_id: &mut dyn FnMut() -> String,
    ) {
        let job = self.job;
        let spec = job.current_spec();
        if spec.job_type == JobType::Batch {
            return self.plan_batch(plan, candidates, new_id);
        }
        // A system job's count is its eligible nodes, and it replaces in
        // place: stop first, then start, at least one node at a time.
        let system = (spec.job_type == JobType::System).then(|| system_nodes(self.state, job));
        let n = system.as_ref().map_or(job.replicas, |s| s.len() as u32);
        let update = &spec.update;
        let mut surge = update.max_surge.resolve(n, true);
        let mut unavailable = update.max_unavailable.resolve(n, false);
        if system.is_some() {
            surge = 0;
            unavailable = unavailable.max(1);
        }
        if surge == 0 && unavailable == 0 {
            surge = 1; // as Kubernetes does when both round down to zero
        }
        let (mut cur, mut old): (Vec<&Allocation>, Vec<&Allocation>) = self
            .allocs
            .iter()
            .copied()
            .filter(|a| a.desired == Desired::Run)
            .partition(|a| {
                a.version == job.current
                    && a.generation == job.generation
                    && !self.draining.contains(a.node.as_str())
                    && !self.stranded(a)
                    && system.as_ref().is_none_or(|s| s.contains(a.node.as_str()))
            });
        cur.sort_by_key(|a| (a.replica, a.created_at_ms));
        old.sort_by_key(|a| (a.replica, a.created_at_ms));
        let settle = update.min_healthy_time;
        let healthy_cur = cur
            .iter()
            .filter(|a| is_healthy(job, a, self.now_ms, settle))
            .count() as u32;

        let active = job.rollout.as_ref().filter(|r| {
            !r.state.is_done() && r.version == job.current && r.generation == job.generation
        });

        if let Some(r) = active.filter(|r| r.state != RolloutState::Paused) {
            if let Some(reason) = rollout::failure(job, r, &cur, self.now_ms) {
                let target = job.stable_version.filter(|s| *s != job.current);
                let roll_back = update.auto_rollback && r.kind != RolloutKind::Rollback;
                match (roll_back, target) {
                    // One command records the failure and starts the rollback, so
                    // nobody ever sees a failed rollout that is not rolling back.
                    (true, Some(to)) => plan.rollbacks.push((
                        job.name.clone(),
                        to,
                        reason,
                        (r.version, r.generation, r.started_at_ms),
                    )),
                    _ => {
                        let mut failed = r.clone();
                        failed.state = RolloutState::Failed;
                        failed.finished_at_ms = Some(self.now_ms);
                        failed.reason = reason;
                        plan.rollouts.push((job.name.clone(), failed));
                    }
                }
                return;
            }
        }

        let mode = rollout::mode(job, active);
        let counts = rollout::Counts {
            replicas: n,
            cur: cur.len() as u32,
            old: old.len() as u32,
            healthy_cur,
            // Told to stop and not gone: counted against the surge while its
            // node has not acted on the stop yet (it may still be starting
            // it), and until it is gone where the job waits for stops, or
            // allows no surge at all (it asked never to run more than
            // `replicas`: a successor replaces its predecessor in place).
            stopping: {
                let waits =
                    surge == 0 || drover_proto::spec::Update::waits_for_stop(job.current_spec());
                self.allocs
                    .iter()
                    .filter(|a| a.desired == Desired::Stop && !a.state.is_terminal())
                    .filter(|a| waits || a.state != AllocState::Stopping)
                    .count() as u32
            },
            surge,
        };
        let step = rollout::step(mode, &counts);
        if step.stop_old {
            self.stop_old(
                plan,
                &old,
                healthy_cur,
                n.saturating_sub(unavailable),
                system.as_ref(),
            );
        }
        if step.scale_down > 0 {
            self.scale_down(plan, &cur, step.scale_down as usize);
        }
        if let Some(before) = active {
            let mut after = before.clone();
            rollout::advance(&mut after, mode, &counts, &job.name, self.now_ms);
            if *before != after {
                plan.rollouts.push((job.name.clone(), after));
            }
        }

        let mut reason = None;
        if step.place > 0 {
            let existing: Vec<&Allocation> = cur.iter().chain(old.iter()).copied().collect();
            reason = self.place_more(plan, candidates, new_id, step.place, step.canary, &existing);
        }
        if reason != job.pending_reason {
            plan.pending.push((job.name.clone(), reason));
        }
    }

    /// Places `count` more replicas of the current version, preempting
    /// lower priorities for those that fit nowhere; returns why some are
    /// not placed yet, if any are not.
    fn place_more(
        &self,
        plan: &mut Plan,
        candidates: &mut [Candidate],
        new_id: &mut dyn FnMut() -> String,
        count: u32,
        canary: bool,
        existing: &[&Allocation],
    ) -> Option<String> {
        let job = self.job;
        let (placed, why) = place::place(
            job,
            self.allocs,
            count,
            canary,
            existing,
            candidates,
            new_id,
        );
        plan.place.extend(placed);
        why.map(|(unplaced, why)| {
            let ask = place::ask_for(job.current_spec());
            match preempt::preempt(self.state, job, &ask, unplaced, candidates, plan) {
                Some((stops, instead)) => {
                    plan.stop.extend(stops);
                    format!(
                        "{unplaced} replica{} not placed yet: {instead}",
                        if unplaced == 1 { "" } else { "s" }
                    )
                }
                None => why,
            }
        })
    }

    /// Stops old allocations: the unavailable ones at once, the available ones
    /// only while enough others stay available.
    fn stop_old(
        &self,
        plan: &mut Plan,
        old: &[&Allocation],
        healthy_cur: u32,
        min_available: u32,
        system: Option<&BTreeSet<&str>>,
    ) {
        let job = self.job;
        let available = |a: &Allocation| {
            let checked = job
                .version(a.version)
                .is_some_and(|v| v.spec.health.is_some());
            a.state == AllocState::Running
                && a.health != HealthState::Unhealthy
                && (!checked || a.health == HealthState::Healthy)
        };
        let why = |a: &Allocation| {
            if self.draining.contains(a.node.as_str()) {
                format!("node {} draining", a.node)
            } else if self.stranded(a) {
                format!("node {}: container network unavailable", a.node)
            } else if system.is_some_and(|s| !s.contains(a.node.as_str())) {
                format!("node {} no longer eligible for this system job", a.node)
            } else if a.version != job.current {
                format!("replaced by version {}", job.current)
            } else {
                "restarted".to_string()
            }
        };
        let healthy_old = old.iter().filter(|a| available(a)).count() as u32;
        let mut can_stop = (healthy_cur + healthy_old).saturating_sub(min_available);
        for a in old {
            if !available(a) {
                plan.stop.push((a.id.clone(), why(a)));
            } else if can_stop > 0 {
                can_stop -= 1;
                plan.stop.push((a.id.clone(), why(a)));
            }
        }
    }

    /// Stops `count` current allocations: not running first, then unhealthy, then newest.
    fn scale_down(&self, plan: &mut Plan, cur: &[&Allocation], count: usize) {
        let mut victims: Vec<&Allocation> = cur.to_vec();
        victims.sort_by_key(|a| {
            (
                a.state == AllocState::Running,
                a.health != HealthState::Unhealthy,
                std::cmp::Reverse(a.created_at_ms),
                std::cmp::Reverse(a.replica),
            )
        });
        for a in victims.into_iter().take(count) {
            plan.stop.push((
                a.id.clone(),
                format!("scaled down to {}", self.job.replicas),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
