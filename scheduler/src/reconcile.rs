//! Reconciliation: what must change so the cluster matches the declared jobs.
//!
//! A pure function from the state to a plan: allocations to place, to stop,
//! jobs whose pending reason changed, and stopped jobs ready to be forgotten.
//! The controller runs it on the leader and proposes the plan as commands; the
//! state machine re-checks each command when it applies, so a plan made on a
//! slightly old state is harmless.
//!
//! A job's replicas are slots `0..replicas`. A slot is filled by an allocation
//! of the current version that the scheduler still wants running, even one
//! whose process ended for good under its restart policy (`never`,
//! `on-failure`): replacing it would defeat that policy. A version change
//! replaces every old allocation at once for now; the health-gated rolling
//! update replaces this step.

use crate::placement::{self, Ask, Candidate};
use crate::state::{Desired, NewAllocation, NodeStatus, State};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub place: Vec<NewAllocation>,
    /// (allocation id, reason)
    pub stop: Vec<(String, String)>,
    /// (job, new pending reason)
    pub pending: Vec<(String, Option<String>)>,
    pub purge: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
            && self.stop.is_empty()
            && self.pending.is_empty()
            && self.purge.is_empty()
    }
}

/// Computes the plan. `new_id` makes allocation ids (random in production).
pub fn reconcile(state: &State, new_id: &mut dyn FnMut() -> String) -> Plan {
    let mut plan = Plan::default();
    let usage = state.usage();
    let mut candidates: Vec<Candidate> = state
        .nodes
        .values()
        .map(|n| {
            let u = usage.get(&n.name).copied().unwrap_or_default();
            Candidate {
                name: n.name.clone(),
                ready: n.status == NodeStatus::Ready,
                schedulable: n.schedulable,
                cpu_total: n.cpu_millis,
                memory_total: n.memory_bytes,
                cpu_used: u.cpu_millis,
                memory_used: u.memory_bytes,
                job_replicas: 0,
            }
        })
        .collect();

    for job in state.jobs.values() {
        if job.stopped {
            let ended = state
                .job_allocations(&job.name)
                .all(|a| a.state.is_terminal());
            if job.purge && ended {
                plan.purge.push(job.name.clone());
            }
            continue;
        }
        let mut filled: BTreeSet<u32> = BTreeSet::new();
        let mut per_node: BTreeMap<&str, u32> = BTreeMap::new();
        for a in state
            .job_allocations(&job.name)
            .filter(|a| a.desired == Desired::Run)
        {
            if a.version != job.current {
                plan.stop
                    .push((a.id.clone(), format!("replaced by version {}", job.current)));
            } else if a.replica >= job.replicas {
                plan.stop
                    .push((a.id.clone(), format!("scaled down to {}", job.replicas)));
            } else if !filled.insert(a.replica) {
                plan.stop
                    .push((a.id.clone(), "duplicate of another allocation".into()));
            } else {
                *per_node.entry(a.node.as_str()).or_default() += 1;
            }
        }
        let missing: Vec<u32> = (0..job.replicas).filter(|r| !filled.contains(r)).collect();
        let mut reason = None;
        if !missing.is_empty() {
            let spec = job.current_spec();
            let ask = Ask {
                cpu_millis: spec.resources.cpu.millis(),
                memory_bytes: spec.resources.memory.bytes(),
            };
            for c in candidates.iter_mut() {
                c.job_replicas = per_node.get(c.name.as_str()).copied().unwrap_or(0);
            }
            let p = placement::place(&candidates, ask, missing.len() as u32);
            for (replica, node) in missing.iter().zip(&p.nodes) {
                let c = candidates
                    .iter_mut()
                    .find(|c| &c.name == node)
                    .expect("placement returns known nodes");
                c.cpu_used += ask.cpu_millis;
                c.memory_used += ask.memory_bytes;
                plan.place.push(NewAllocation {
                    id: new_id(),
                    job: job.name.clone(),
                    version: job.current,
                    replica: *replica,
                    node: node.clone(),
                });
            }
            reason = p.reason.map(|r| {
                let n = p.unplaced;
                format!(
                    "{n} replica{} not placed: {r}",
                    if n == 1 { "" } else { "s" }
                )
            });
        }
        if reason != job.pending_reason {
            plan.pending.push((job.name.clone(), reason));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AllocState, AllocationReport, Command};
    use drover_proto::spec::from_yaml;

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("id{n:03}")
        }
    }

    fn cluster(nodes: &[(&str, u64, u64)]) -> State {
        let mut s = State::default();
        for (i, (name, cpu, mem_mi)) in nodes.iter().enumerate() {
            s.apply(
                i as u64 + 1,
                &Command::RegisterNode {
                    name: name.to_string(),
                    address: format!("10.0.0.{i}:7401"),
                    cpu_millis: *cpu,
                    memory_bytes: mem_mi << 20,
                    at_ms: 0,
                },
            );
        }
        s
    }

    fn submit(s: &mut State, yaml: &str) {
        let spec = from_yaml(yaml).unwrap();
        let r = s.apply(
            s.last_index + 1,
            &Command::SubmitJob {
                request_id: String::new(),
                spec: Box::new(spec),
                at_ms: 1,
            },
        );
        assert!(r.ok, "{r:?}");
    }

    /// Applies plans until nothing changes, as the controller would.
    fn converge(s: &mut State, gen: &mut dyn FnMut() -> String) {
        for _ in 0..10 {
            let plan = reconcile(s, gen);
            if plan.is_empty() {
                return;
            }
            apply_plan(s, plan);
        }
        panic!("did not converge");
    }

    fn apply_plan(s: &mut State, plan: Plan) {
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::PlaceAllocations {
                allocations: plan.place,
                at_ms: 2,
            },
        );
        for (id, reason) in plan.stop {
            let i = s.last_index + 1;
            s.apply(
                i,
                &Command::StopAllocations {
                    ids: vec![id],
                    reason,
                    at_ms: 2,
                },
            );
        }
        for (job, reason) in plan.pending {
            let i = s.last_index + 1;
            s.apply(i, &Command::SetPendingReason { job, reason });
        }
        for name in plan.purge {
            let i = s.last_index + 1;
            s.apply(i, &Command::PurgeJob { name });
        }
    }

    fn running(s: &State, job: &str) -> Vec<(u64, u32, String)> {
        s.job_allocations(job)
            .filter(|a| a.desired == Desired::Run)
            .map(|a| (a.version, a.replica, a.node.clone()))
            .collect()
    }

    #[test]
    fn places_all_replicas_spread() {
        let mut s = cluster(&[("a", 4000, 4096), ("b", 4000, 4096), ("c", 4000, 4096)]);
        submit(&mut s, "name: web\nreplicas: 3\nimage: oci:/x:v1\n");
        converge(&mut s, &mut ids());
        let r = running(&s, "web");
        assert_eq!(r.len(), 3);
        let nodes: BTreeSet<_> = r.iter().map(|x| x.2.clone()).collect();
        assert_eq!(nodes.len(), 3, "{r:?}");
        assert_eq!(s.jobs["web"].pending_reason, None);
    }

    #[test]
    fn unplaceable_job_stays_pending_with_reason() {
        let mut s = cluster(&[("a", 4000, 256), ("b", 4000, 256), ("c", 4000, 256)]);
        submit(
            &mut s,
            "name: big\nreplicas: 2\nimage: oci:/x:v1\nresources: {memory: 512Mi}\n",
        );
        converge(&mut s, &mut ids());
        assert!(running(&s, "big").is_empty());
        assert_eq!(
            s.jobs["big"].pending_reason.as_deref(),
            Some("2 replicas not placed: no node has 512Mi free memory: 3 nodes checked")
        );
    }

    #[test]
    fn scale_down_and_new_version() {
        let mut s = cluster(&[("a", 4000, 4096)]);
        let mut gen = ids();
        submit(&mut s, "name: web\nreplicas: 3\nimage: oci:/x:v1\n");
        converge(&mut s, &mut gen);
        submit(&mut s, "name: web\nreplicas: 1\nimage: oci:/x:v2\n");
        converge(&mut s, &mut gen);
        assert_eq!(running(&s, "web"), vec![(2, 0, "a".to_string())]);
        let stopped: Vec<_> = s
            .job_allocations("web")
            .filter(|a| a.desired == Desired::Stop)
            .map(|a| a.desired_reason.clone())
            .collect();
        assert_eq!(stopped.len(), 3);
        assert!(
            stopped.iter().all(|r| r == "replaced by version 2"),
            "{stopped:?}"
        );
    }

    #[test]
    fn node_loss_replaces_allocations() {
        let mut s = cluster(&[("a", 4000, 4096), ("b", 4000, 4096)]);
        let mut gen = ids();
        submit(&mut s, "name: web\nreplicas: 2\nimage: oci:/x:v1\n");
        converge(&mut s, &mut gen);
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::SetNodeStatus {
                name: "a".into(),
                status: NodeStatus::Down,
                at_ms: 3,
            },
        );
        converge(&mut s, &mut gen);
        let r = running(&s, "web");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| x.2 == "b"), "{r:?}");
    }

    #[test]
    fn ended_allocation_under_restart_never_is_not_replaced() {
        let mut s = cluster(&[("a", 4000, 4096)]);
        let mut gen = ids();
        submit(&mut s, "name: once\nimage: oci:/x:v1\nrestart: never\n");
        converge(&mut s, &mut gen);
        let id = s.allocations.keys().next().unwrap().clone();
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::ReportAllocations {
                node: "a".into(),
                reports: vec![AllocationReport {
                    id,
                    state: AllocState::Stopped,
                    pid: 0,
                    exit_code: Some(0),
                    reason: "exited".into(),
                    restarts: 0,
                }],
                at_ms: 4,
            },
        );
        assert!(reconcile(&s, &mut gen).is_empty());
    }

    #[test]
    fn stopped_job_with_purge_is_forgotten_once_ended() {
        let mut s = cluster(&[("a", 4000, 4096)]);
        let mut gen = ids();
        submit(&mut s, "name: web\nimage: oci:/x:v1\n");
        converge(&mut s, &mut gen);
        let i = s.last_index + 1;
        s.apply(
            i,
            &Command::StopJob {
                request_id: "r".into(),
                name: "web".into(),
                purge: true,
                at_ms: 5,
            },
        );
        // Still pending (never reported), so the stop ends it at once.
        converge(&mut s, &mut gen);
        assert!(s.jobs.is_empty());
        assert!(s.allocations.is_empty());
    }
}
