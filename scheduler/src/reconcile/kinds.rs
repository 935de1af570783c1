//! What differs for batch and system jobs.
//!
//! A **system** job runs one replica on every eligible node: ready, not
//! draining, passing the job's constraints, with the container network
//! and the volumes it needs. A cordoned node keeps the replica it has (as
//! Kubernetes keeps a DaemonSet's pod) but gets no new one. Its count
//! follows the nodes, and a new version replaces replicas node by node,
//! stopping before starting, `max_unavailable` (at least 1) at a time.
//!
//! A **batch** job runs replicas to completion: `parallelism` at a time
//! until `completions` have exited 0. A replica that fails (exits non-zero,
//! cannot start, or is lost with its node) is counted, when it ends, in
//! the job's run (`Job::count_batch_end`) and retried as a new replica on
//! any node, until more than `retries` have failed. Once the run has ended
//! the replicas still running are stopped. Ended replicas are marked to
//! stop, so their nodes clean them up and the history of them stays
//! bounded: the run keeps the counts.
//!
//! A **periodic** batch job (one with a `schedule`) runs nothing until its
//! first firing; each firing due is proposed as `LaunchRun`, which starts a
//! new run (a new generation) or, when the previous run is still going and
//! the overlap is `skip`, counts a skipped firing.

use super::{JobPlan, Plan};
use crate::placement::Candidate;
use crate::state::{AllocState, Allocation, Desired, Job, NodeStatus, RolloutState, State};
use drover_proto::spec::Network;
use std::collections::BTreeSet;

/// The nodes a system job runs on (see the module's notes).
pub fn system_nodes<'a>(state: &'a State, job: &Job) -> BTreeSet<&'a str> {
    let spec = job.current_spec();
    let matchers: Vec<_> = spec
        .constraints
        .iter()
        .filter_map(|c| c.matcher().ok())
        .collect();
    let has_current: BTreeSet<&str> = state
        .job_allocations(&job.name)
        .filter(|a| {
            a.desired == Desired::Run
                && !a.state.is_terminal()
                && a.version == job.current
                && a.generation == job.generation
        })
        .map(|a| a.node.as_str())
        .collect();
    state
        .nodes
        .values()
        .filter(|n| {
            n.status == NodeStatus::Ready
                && !n.draining
                && (n.schedulable || has_current.contains(n.name.as_str()))
                && (spec.network != Network::Private || n.network_error.is_empty())
                && spec.volumes.iter().all(|m| {
                    n.volumes
                        .get(&m.name)
                        .is_some_and(|read_only| m.read_only || !read_only)
                })
                && (matchers.is_empty() || {
                    let attributes = n.attributes();
                    matchers.iter().all(|m| m.matches(&attributes))
                })
        })
        .map(|n| n.name.as_str())
        .collect()
}

impl JobPlan<'_> {
    /// Plans a batch job's pass (see the module's notes).
    pub(super) fn plan_batch(
        &self,
        plan: &mut Plan,
        candidates: &mut [Candidate],
        new_id: &mut dyn FnMut() -> String,
    ) {
        let job = self.job;
        let spec = job.current_spec();
        let run = job.batch_run();
        let ended = run.and_then(|r| r.ended.as_ref());
        let mut live: Vec<&Allocation> = Vec::new();
        for a in self
            .allocs
            .iter()
            .copied()
            .filter(|a| a.desired == Desired::Run)
        {
            let current = a.version == job.current && a.generation == job.generation;
            let why = if a.state.is_terminal() {
                if a.state == AllocState::Stopped && a.exit_code == Some(0) {
                    "completed".to_string()
                } else {
                    "failed".to_string()
                }
            } else if !current && a.version == job.current {
                "a newer run started".to_string()
            } else if !current {
                format!("replaced by version {}", job.current)
            } else if let Some(end) = ended {
                if end.complete {
                    "job complete".to_string()
                } else {
                    format!("job failed: {}", end.reason)
                }
            } else if self.draining.contains(a.node.as_str()) {
                format!("node {} draining", a.node)
            } else if self.stranded(a) {
                format!("node {}: container network unavailable", a.node)
            } else {
                live.push(a);
                continue;
            };
            plan.stop.push((a.id.clone(), why));
        }

        // A batch job's new version has nothing to roll out gradually: it
        // is in force at once, its old version's replicas stopping.
        if let Some(r) = job.rollout.as_ref().filter(|r| {
            !r.state.is_done() && r.version == job.current && r.generation == job.generation
        }) {
            let mut done = r.clone();
            done.state = RolloutState::Succeeded;
            done.finished_at_ms = Some(self.now_ms);
            done.reason = format!(
                "version {} runs as a batch: {} completion(s), {} at a time",
                r.version,
                spec.completions(),
                spec.parallelism()
            );
            plan.rollouts.push((job.name.clone(), done));
        }

        // A periodic job's firing due starts a run (the state machine
        // decides what an overlap does); until its first, nothing runs.
        if let Some(schedule) = &spec.schedule {
            if let Some(at) = schedule.due(job.periodic_after_ms(), self.now_ms) {
                plan.launch.push((job.name.clone(), at));
            }
        }
        let waiting = spec.schedule.is_some() && run.is_none();
        let mut reason = None;
        if ended.is_none() && !waiting {
            let succeeded = run.map_or(0, |r| r.succeeded);
            let wanted = spec
                .parallelism()
                .min(spec.completions().saturating_sub(succeeded));
            let count = wanted.saturating_sub(live.len() as u32);
            if count > 0 {
                reason = self.place_more(plan, candidates, new_id, count, false, &live);
            }
        }
        if reason != job.pending_reason {
            plan.pending.push((job.name.clone(), reason));
        }
    }
}

#[cfg(test)]
#[path = "kinds_tests.rs"]
mod tests;
