//! Preemption: a replica that fits nowhere takes the place of replicas of
//! jobs of lower priority, as in Borg's priority bands and Kubernetes' pod
//! priority.
//!
//! Only cpu, memory and disk are freed this way: a node is a candidate when
//! every other rule holds there (ready, schedulable, constraints, network,
//! ports, volumes). On each candidate the victims are chosen from the
//! replicas of strictly lower priority, lowest priority first and larger
//! first among equals, until the replica would fit; those not needed after
//! all are then spared, highest priority first. The node whose victims are
//! cheapest wins: the lowest highest-priority among them, then the fewest,
//! then the least cpu and memory taken away. A job never loses more
//! replicas than its `update.max_unavailable` allows (counting those
//! already unavailable), so preemption of a job needs it to allow some;
//! a batch job's replicas may all be preempted (each runs again later and
//! does not count as failed).
//!
//! Victims are stopped (their reason names the job that needed the room);
//! the preemptor is placed by a later pass once they have let go of their
//! resources. Meanwhile room that stopping replicas will free counts as
//! free, so a pass never evicts more than a replica needs.

use super::{Candidate, Plan};
use crate::placement::{fits_but_for_resources, Ask, Rules};
use crate::state::{Allocation, Desired, Job, State};
use drover_proto::spec::JobType;
use std::collections::{BTreeMap, BTreeSet};

/// The start of every preempted replica's stop reason.
pub const PREEMPTED: &str = "preempted";

/// cpu millis, memory bytes, disk bytes (signed: what is missing is negative).
type Room = (i64, i64, i64);

/// What evicting a set of replicas costs: the highest priority among them,
/// how many, and the cpu and memory they hold.
type Cost = (u32, usize, i64, i64);

fn room_of(a: &Allocation) -> Room {
    (
        a.cpu_millis as i64,
        a.memory_bytes as i64,
        a.disk_bytes as i64,
    )
}

fn add(a: Room, b: Room) -> Room {
    (a.0 + b.0, a.1 + b.1, a.2 + b.2)
}

fn sub(a: Room, b: Room) -> Room {
    (a.0 - b.0, a.1 - b.1, a.2 - b.2)
}

/// Whether `free` holds `need` (a node that did not say its disk is not
/// checked for disk).
fn holds(free: Room, need: Room, disk_checked: bool) -> bool {
    free.0 >= need.0 && free.1 >= need.1 && (!disk_checked || free.2 >= need.2)
}

/// What preemption decided for `unplaced` replicas of `job`: replicas to
/// stop (id, reason), and what to tell the user instead of "does not fit",
/// or `None` when no lower-priority replica can make room.
pub(super) fn preempt(
    state: &State,
    job: &Job,
    ask: &Ask,
    unplaced: u32,
    candidates: &[Candidate],
    plan: &Plan,
) -> Option<(Vec<(String, String)>, String)> {
    let priority = job.current_spec().priority;
    if priority == 0 || unplaced == 0 {
        return None;
    }
    let rules = Rules::new(ask).ok()?;
    let priority_of = |a: &Allocation| {
        state
            .jobs
            .get(&a.job)
            .map_or(0, |j| j.current_spec().priority)
    };
    let stopping_in_plan: BTreeSet<&str> = plan.stop.iter().map(|(id, _)| id.as_str()).collect();
    // How many more replicas each job may lose now (looked up once).
    let budget_of = |name: &str, budget: &mut BTreeMap<String, u32>| -> u32 {
        *budget.entry(name.to_string()).or_insert_with(|| {
            let Some(j) = state.jobs.get(name) else {
                return 0;
            };
            let spec = j.current_spec();
            let replicas = match spec.job_type {
                // A batch replica preempted is run again later (it does
                // not count as failed): all of them may go.
                JobType::Batch => return u32::MAX,
                JobType::System => super::system_nodes(state, j).len() as u32,
                JobType::Service => j.replicas,
            };
            let allowed = spec.update.max_unavailable.resolve(replicas, false);
            let available = state
                .job_allocations(name)
                .filter(|a| {
                    a.desired == Desired::Run
                        && a.state == crate::state::AllocState::Running
                        && !stopping_in_plan.contains(a.id.as_str())
                })
                .count() as u32;
            let unavailable = replicas.saturating_sub(available);
            allowed.saturating_sub(unavailable)
        })
    };
    let mut budgets: BTreeMap<String, u32> = BTreeMap::new();
    let need: Room = (
        ask.cpu_millis as i64,
        ask.memory_bytes as i64,
        ask.disk_bytes as i64,
    );
    // Per node: room that replicas already stopping will free, less what
    // replicas of this job were promised there in this pass.
    let mut coming: BTreeMap<&str, Room> = BTreeMap::new();
    for a in state.allocations.values().filter(|a| a.holds_resources()) {
        if a.desired == Desired::Stop || stopping_in_plan.contains(a.id.as_str()) {
            let r = coming.entry(a.node.as_str()).or_default();
            *r = add(*r, room_of(a));
        }
    }
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut stops: Vec<(String, String)> = Vec::new();
    let mut waiting_on: BTreeSet<String> = BTreeSet::new();
    let mut evicting_on: BTreeSet<String> = BTreeSet::new();
    let mut victim_jobs: BTreeSet<String> = BTreeSet::new();
    for _ in 0..unplaced {
        // (cost, node, victims)
        let mut best: Option<(Cost, &str, Vec<&Allocation>)> = None;
        for n in candidates
            .iter()
            .filter(|n| fits_but_for_resources(n, ask, &rules))
        {
            let free: Room = (
                n.cpu_total as i64 - n.cpu_used as i64,
                n.memory_total as i64 - n.memory_used as i64,
                n.disk_total as i64 - n.disk_used as i64,
            );
            let disk_checked = n.disk_total > 0;
            if holds(free, need, disk_checked) {
                // It has the room: what keeps the replica off is not room.
                continue;
            }
            let free = add(
                free,
                coming.get(n.name.as_str()).copied().unwrap_or_default(),
            );
            if holds(free, need, disk_checked) {
                // Room is coming: wait for it rather than evict more.
                let cost = (0, 0, 0, 0);
                if best
                    .as_ref()
                    .is_none_or(|(c, name, _)| (cost, n.name.as_str()) < (*c, *name))
                {
                    best = Some((cost, n.name.as_str(), vec![]));
                }
                continue;
            }
            let mut pool: Vec<&Allocation> = state
                .allocations
                .values()
                .filter(|a| {
                    a.node == n.name
                        && a.desired == Desired::Run
                        && a.holds_resources()
                        && !stopping_in_plan.contains(a.id.as_str())
                        && !taken.contains(a.id.as_str())
                        && priority_of(a) < priority
                })
                .collect();
            pool.sort_by_key(|a| {
                (
                    priority_of(a),
                    std::cmp::Reverse(a.cpu_millis + (a.memory_bytes >> 20)),
                    a.id.clone(),
                )
            });
            let mut victims: Vec<&Allocation> = Vec::new();
            let mut freed = free;
            let mut spent: BTreeMap<&str, u32> = BTreeMap::new();
            for a in pool {
                if holds(freed, need, disk_checked) {
                    break;
                }
                let left = budget_of(&a.job, &mut budgets);
                let used = spent.entry(a.job.as_str()).or_default();
                if *used >= left {
                    continue;
                }
                *used += 1;
                freed = add(freed, room_of(a));
                victims.push(a);
            }
            if !holds(freed, need, disk_checked) {
                continue;
            }
            // Spare those not needed after all, highest priority first.
            for i in (0..victims.len()).rev() {
                let without = sub(freed, room_of(victims[i]));
                if holds(without, need, disk_checked) {
                    freed = without;
                    victims.remove(i);
                }
            }
            let cost = (
                victims.iter().map(|a| priority_of(a)).max().unwrap_or(0),
                victims.len(),
                victims.iter().map(|a| a.cpu_millis as i64).sum(),
                victims.iter().map(|a| a.memory_bytes as i64).sum(),
            );
            if best
                .as_ref()
                .is_none_or(|(c, name, _)| (cost, n.name.as_str()) < (*c, *name))
            {
                best = Some((cost, n.name.as_str(), victims));
            }
        }
        let Some((_, node, victims)) = best else {
            break;
        };
        let slot = coming.entry(node).or_default();
        for a in &victims {
            *slot = add(*slot, room_of(a));
            taken.insert(a.id.as_str());
            *budgets.get_mut(&a.job).expect("budget looked up") -= 1;
            victim_jobs.insert(a.job.clone());
            stops.push((
                a.id.clone(),
                format!(
                    "{PREEMPTED}: job {} (priority {priority}) needed its room on {node}",
                    job.name
                ),
            ));
        }
        // This replica's room is promised.
        *slot = sub(*slot, need);
        if victims.is_empty() {
            waiting_on.insert(node.to_string());
        } else {
            evicting_on.insert(node.to_string());
        }
    }
    if waiting_on.is_empty() && evicting_on.is_empty() {
        return None;
    }
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut why = Vec::new();
    if !stops.is_empty() {
        why.push(format!(
            "preempting {} replica{} of lower-priority job{} {} on {}",
            stops.len(),
            if stops.len() == 1 { "" } else { "s" },
            if victim_jobs.len() == 1 { "" } else { "s" },
            list(&victim_jobs),
            list(&evicting_on)
        ));
    }
    if !waiting_on.is_empty() {
        why.push(format!(
            "waiting for replicas stopping on {} to free their room",
            list(&waiting_on)
        ));
    }
    Some((stops, why.join("; ")))
}
