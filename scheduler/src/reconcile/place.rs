//! Placing new replicas of a job's current version.

use crate::placement::{self, Ask, Candidate};
use crate::state::{Allocation, Desired, Job, NewAllocation};
use std::collections::{BTreeMap, BTreeSet};

/// Places `count` new replicas of `job` (whose allocations are
/// `allocations`) of its current version on `candidates`
/// (which then count what they take): spread over the nodes, given where
/// the job's `existing` replicas are, and numbered with the lowest replica
/// numbers no running allocation of this version holds. Returns the new
/// allocations and, when some do not fit anywhere, how many and why.
pub(super) fn place(
    job: &Job,
    allocations: &[&Allocation],
    count: u32,
    canary: bool,
    existing: &[&Allocation],
    candidates: &mut [Candidate],
    new_id: &mut dyn FnMut() -> String,
) -> (Vec<NewAllocation>, Option<(u32, String)>) {
    let ask = ask_for(job.current_spec());
    let mut per_node: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for a in existing {
        let (all, this_version) = per_node.entry(a.node.as_str()).or_default();
        *all += 1;
        *this_version += u32::from(a.version == job.current && a.generation == job.generation);
    }
    for c in candidates.iter_mut() {
        (c.job_replicas, c.version_replicas) =
            per_node.get(c.name.as_str()).copied().unwrap_or((0, 0));
    }
    let p = placement::place_on(candidates, &ask, count);
    let taken: BTreeSet<u32> = allocations
        .iter()
        .filter(|a| {
            a.desired == Desired::Run && a.version == job.current && a.generation == job.generation
        })
        .map(|a| a.replica)
        .collect();
    let mut free = (0u32..).filter(|i| !taken.contains(i));
    let mut placed = Vec::new();
    for node in &p.nodes {
        placed.push(NewAllocation {
            id: new_id(),
            job: job.name.clone(),
            version: job.current,
            replica: free.next().expect("endless"),
            node: node.clone(),
            generation: job.generation,
            canary,
        });
    }
    let reason = p.reason.map(|r| {
        let n = p.unplaced;
        (
            n,
            format!(
                "{n} replica{} not placed: {r}",
                if n == 1 { "" } else { "s" }
            ),
        )
    });
    (placed, reason)
}

/// What one replica of `spec` asks of a node.
pub(super) fn ask_for(spec: &drover_proto::spec::JobSpec) -> Ask {
    let host_ports = if spec.network == drover_proto::spec::Network::Host {
        spec.ports.iter().map(|p| p.container as u16).collect()
    } else {
        vec![]
    };
    Ask {
        cpu_millis: spec.resources.cpu.millis(),
        memory_bytes: spec.resources.memory.bytes(),
        host_ports,
        private_network: spec.network == drover_proto::spec::Network::Private,
        volumes: spec
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.read_only))
            .collect(),
        disk_bytes: spec.resources.disk.map_or(0, |d| d.bytes()),
        constraints: spec.constraints.clone(),
        max_per_node: spec.per_node_limit(),
        affinities: spec.affinities.clone(),
        spread: spec.spread.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, State};

    fn candidate(name: &str, cpu_millis: u64) -> Candidate {
        Candidate {
            name: name.into(),
            ready: true,
            schedulable: true,
            cpu_total: cpu_millis,
            memory_total: 4 << 30,
            cpu_used: 0,
            memory_used: 0,
            job_replicas: 0,
            version_replicas: 0,
            host_ports: Default::default(),
            network_error: String::new(),
            volumes: Default::default(),
            disk_total: 0,
            disk_used: 0,
            attributes: Default::default(),
        }
    }

    fn state_with_web(replicas: u32) -> State {
        let mut s = State::default();
        let spec = format!(
            "name: web\nreplicas: {replicas}\nimage: oci:/x:v1\nresources: {{cpu: 1, memory: 64Mi}}\n"
        );
        let r = s.apply(
            1,
            &Command::SubmitJob {
                request_id: String::new(),
                spec: Box::new(drover_proto::spec::from_yaml(&spec).unwrap()),
                at_ms: 0,
            },
        );
        assert!(r.ok, "{r:?}");
        s
    }

    #[test]
    fn replicas_spread_take_the_lowest_free_numbers_and_use_up_the_nodes() {
        let s = state_with_web(3);
        let job = &s.jobs["web"];
        let mut nodes = vec![candidate("a", 4000), candidate("b", 4000)];
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("id{n}")
        };
        let (placed, why) = place(job, &[], 3, false, &[], &mut nodes, &mut id);
        assert_eq!(why, None);
        let numbers: Vec<u32> = placed.iter().map(|p| p.replica).collect();
        assert_eq!(numbers, [0, 1, 2]);
        let on_a = placed.iter().filter(|p| p.node == "a").count();
        assert!(on_a == 1 || on_a == 2, "spread: {placed:?}");
        let used: u64 = nodes.iter().map(|c| c.cpu_used).sum();
        assert_eq!(used, 3000, "the nodes count what was placed");
        assert!(placed.iter().all(|p| p.version == 1 && !p.canary));
    }

    #[test]
    fn what_does_not_fit_is_said() {
        let s = state_with_web(3);
        let job = &s.jobs["web"];
        let mut nodes = vec![candidate("a", 1500)];
        let mut id = || "x".to_string();
        let (placed, why) = place(job, &[], 3, true, &[], &mut nodes, &mut id);
        assert_eq!(placed.len(), 1);
        assert!(placed[0].canary);
        let (unplaced, why) = why.expect("a reason");
        assert_eq!(unplaced, 2);
        assert!(why.starts_with("2 replicas not placed: "), "{why}");
    }
}
