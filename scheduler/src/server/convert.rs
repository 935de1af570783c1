//! Conversions from the state machine's types to wire types, in one place.

use crate::state::{AllocState, Allocation, Desired, Job, Node, State};
use drover_proto::pb;

pub fn allocation(state: &State, a: &Allocation) -> pb::Allocation {
    pb::Allocation {
        id: a.id.clone(),
        name: a.name.clone(),
        job: a.job.clone(),
        version: a.version,
        replica: a.replica,
        node: a.node.clone(),
        desired: match a.desired {
            Desired::Run => "run".into(),
            Desired::Stop => "stop".into(),
        },
        state: a.state.as_str().into(),
        pid: if a.state.is_terminal() { 0 } else { a.pid },
        exit_code: a.exit_code,
        reason: a.reason.clone(),
        desired_reason: a.desired_reason.clone(),
        restarts: a.restarts,
        created_at_ms: a.created_at_ms,
        updated_at_ms: a.updated_at_ms,
        node_address: state
            .nodes
            .get(&a.node)
            .map(|n| n.address.clone())
            .unwrap_or_default(),
    }
}

/// running | pending | stopped | dead
pub fn job_status(state: &State, job: &Job) -> (&'static str, u32) {
    let running = state
        .job_allocations(&job.name)
        .filter(|a| {
            a.desired == Desired::Run && a.version == job.current && a.state == AllocState::Running
        })
        .count() as u32;
    let status = if job.stopped {
        let live = state
            .job_allocations(&job.name)
            .any(|a| !a.state.is_terminal());
        if live {
            "stopping"
        } else {
            "stopped"
        }
    } else if running >= job.replicas {
        "running"
    } else {
        "pending"
    };
    (status, running)
}

pub fn job_summary(state: &State, job: &Job) -> pb::JobSummary {
    let (status, running) = job_status(state, job);
    pb::JobSummary {
        name: job.name.clone(),
        version: job.current,
        desired: if job.stopped { 0 } else { job.replicas },
        running,
        status: status.into(),
        image: job.current_spec().image.clone(),
        submitted_at_ms: job.submitted_at_ms,
    }
}

pub fn job(state: &State, job: &Job) -> pb::JobStatus {
    let (status, running) = job_status(state, job);
    let mut allocations: Vec<pb::Allocation> = state
        .job_allocations(&job.name)
        .map(|a| allocation(state, a))
        .collect();
    allocations.sort_by(|a, b| {
        (a.desired != "run", a.replica, a.created_at_ms).cmp(&(
            b.desired != "run",
            b.replica,
            b.created_at_ms,
        ))
    });
    pb::JobStatus {
        name: job.name.clone(),
        version: job.current,
        desired: if job.stopped { 0 } else { job.replicas },
        running,
        status: status.into(),
        pending_reason: job.pending_reason.clone().unwrap_or_default(),
        spec_json: job.current_spec().to_json(),
        allocations,
        submitted_at_ms: job.submitted_at_ms,
        read: None,
        versions: job
            .versions
            .iter()
            .map(|v| pb::JobVersion {
                version: v.version,
                submitted_at_ms: v.submitted_at_ms,
                image: v.spec.image.clone(),
            })
            .collect(),
    }
}

pub fn node(state: &State, n: &Node) -> pb::Node {
    let usage = state.usage().get(&n.name).copied().unwrap_or_default();
    pb::Node {
        name: n.name.clone(),
        address: n.address.clone(),
        status: n.status.as_str().into(),
        cpu_millis: n.cpu_millis,
        memory_bytes: n.memory_bytes,
        cpu_allocated_millis: usage.cpu_millis,
        memory_allocated_bytes: usage.memory_bytes,
        allocations: usage.allocations,
        registered_at_ms: n.registered_at_ms,
        schedulable: n.schedulable,
    }
}
