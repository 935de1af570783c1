//! Conversions from the state machine's types to wire types, in one place.

use crate::state::{
    AllocState, Allocation, Desired, Job, Node, RolloutKind, RolloutState, State, VersionOutcome,
};
use drover_proto::pb;
use drover_proto::spec::{JobSpec, JobType};

pub fn allocation(state: &State, a: &Allocation) -> pb::Allocation {
    pb::Allocation {
        id: a.id.clone(),
        name: a.name.clone(),
        job: a.job.clone(),
        version: a.version,
        replica: a.replica,
        node: a.node.clone(),
        desired: desired(a.desired).word().into(),
        desired_state: desired(a.desired) as i32,
        state: a.state.as_str().into(),
        phase: a.state.phase() as i32,
        health_state: a.health.wire() as i32,
        pid: if a.state.is_terminal() { 0 } else { a.pid },
        exit_code: a.exit_code,
        reason: a.reason.clone(),
        desired_reason: a.desired_reason.clone(),
        health: a.health.as_str().into(),
        canary: a.canary,
        ip: a.ip.clone(),
        health_detail: a.health_detail.clone(),
        restarting_at_ms: a.restarting_at_ms,
        killed_at_grace: a.killed_at_grace,
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

fn desired(d: Desired) -> pb::Desired {
    match d {
        Desired::Run => pb::Desired::Run,
        Desired::Stop => pb::Desired::Stop,
    }
}

/// How many replicas should run: a service's count, a system job's
/// eligible nodes, a batch job's parallelism while completions remain.
pub fn desired_replicas(state: &State, job: &Job) -> u32 {
    let spec = job.current_spec();
    if job.stopped {
        return 0;
    }
    match spec.job_type {
        JobType::Service => job.replicas,
        JobType::System => crate::reconcile::system_nodes(state, job).len() as u32,
        JobType::Batch => match job.batch_run() {
            Some(r) if r.ended.is_some() => 0,
            None if spec.schedule.is_some() => 0,
            run => spec.parallelism().min(
                spec.completions()
                    .saturating_sub(run.map_or(0, |r| r.succeeded)),
            ),
        },
    }
}

/// running | pending | stopping | stopped, and for a batch job complete | failed
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
    } else if job.current_spec().schedule.is_some()
        && job.batch_run().is_none_or(|r| r.ended.is_some())
    {
        // A periodic job between runs waits for its next firing.
        "scheduled"
    } else if let Some(end) = job.batch_ended() {
        if end.complete {
            "complete"
        } else {
            "failed"
        }
    } else if running >= desired_replicas(state, job) {
        "running"
    } else {
        "pending"
    };
    (status, running)
}

/// A batch job's progress, for a batch job.
fn batch_progress(job: &Job, running: u32) -> Option<pb::BatchProgress> {
    let spec = job.current_spec();
    if spec.job_type != JobType::Batch {
        return None;
    }
    let run = job.batch_run();
    let end = run.and_then(|r| r.ended.as_ref());
    Some(pb::BatchProgress {
        completions: spec.completions(),
        parallelism: spec.parallelism(),
        retries: spec.retries(),
        succeeded: run.map_or(0, |r| r.succeeded),
        failed: run.map_or(0, |r| r.failed),
        running,
        outcome: match end {
            Some(e) if e.complete => "complete".into(),
            Some(_) => "failed".into(),
            None => String::new(),
        },
        reason: end.map(|e| e.reason.clone()).unwrap_or_default(),
        ended_at_ms: end.map_or(0, |e| e.at_ms),
        schedule: spec
            .schedule
            .as_ref()
            .map(|s| format!("{} ({}), overlap {}", s.cron, s.timezone, s.overlap.word()))
            .unwrap_or_default(),
        next_run_ms: spec
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(job.periodic_after_ms().max(crate::clock::now_ms())))
            .unwrap_or(0),
        runs: job.periodic.as_ref().map_or(0, |p| p.runs),
        skipped: job.periodic.as_ref().map_or(0, |p| p.skipped),
    })
}

pub fn job_summary(state: &State, job: &Job) -> pb::JobSummary {
    let (status, running) = job_status(state, job);
    pb::JobSummary {
        name: job.name.clone(),
        version: job.current,
        desired: desired_replicas(state, job),
        running,
        status: status.into(),
        image: job.current_spec().image.clone(),
        submitted_at_ms: job.submitted_at_ms,
        r#type: job.current_spec().job_type.word().into(),
        batch: batch_progress(job, running),
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
        desired: desired_replicas(state, job),
        running,
        status: status.into(),
        r#type: job.current_spec().job_type.word().into(),
        batch: batch_progress(job, running),
        pending_reason: job.pending_reason.clone().unwrap_or_default(),
        spec_json: job.current_spec().to_json(),
        allocations,
        submitted_at_ms: job.submitted_at_ms,
        read: None,
        versions: job
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| pb::JobVersion {
                version: v.version,
                submitted_at_ms: v.submitted_at_ms,
                image: v.spec.image.clone(),
                outcome: v
                    .outcome
                    .as_ref()
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                outcome_kind: match &v.outcome {
                    Some(VersionOutcome::Succeeded) => pb::VersionOutcome::Succeeded,
                    Some(VersionOutcome::Failed { .. }) => pb::VersionOutcome::Failed,
                    Some(VersionOutcome::Superseded { .. }) => pb::VersionOutcome::Superseded,
                    Some(VersionOutcome::RolledBack { .. }) => pb::VersionOutcome::RolledBack,
                    Some(VersionOutcome::Other(_)) | None => pb::VersionOutcome::Unspecified,
                } as i32,
                changes: match i.checked_sub(1).map(|p| &job.versions[p]) {
                    Some(prev) => spec_changes(&prev.spec, &v.spec),
                    None => vec!["first version".into()],
                },
            })
            .collect(),
        rollout: job.rollout.as_ref().map(|r| rollout(state, job, r)),
        stable_version: job.stable_version,
    }
}

/// `usage` is every node's ([`State::usage`]), worked out once for all.
pub fn node(usage: &std::collections::BTreeMap<String, crate::state::Usage>, n: &Node) -> pb::Node {
    let usage = usage.get(&n.name).copied().unwrap_or_default();
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
        draining: n.draining,
        subnet: n.subnet.clone(),
        network_error: n.network_error.clone(),
        volumes: n
            .volumes
            .iter()
            .map(|(name, read_only)| pb::HostVolume {
                name: name.clone(),
                read_only: *read_only,
            })
            .collect(),
        disk_bytes: n.disk_bytes,
        disk_allocated_bytes: usage.disk_bytes,
        labels: n.labels_in_force(),
        facts: n.facts.clone(),
    }
}

pub fn rollout(state: &State, job: &Job, r: &crate::state::Rollout) -> pb::Rollout {
    let spec = job.current_spec();
    let mut updated = 0;
    let mut healthy = 0;
    let mut old = 0;
    let now = crate::clock::now_ms();
    for a in state
        .job_allocations(&job.name)
        .filter(|a| a.desired == Desired::Run)
    {
        if a.version == r.version && a.generation == r.generation {
            updated += 1;
            if crate::reconcile::is_healthy(job, a, now, spec.update.min_healthy_time) {
                healthy += 1;
            }
        } else {
            old += 1;
        }
    }
    pb::Rollout {
        version: r.version,
        kind: match r.kind {
            RolloutKind::Update => "update",
            RolloutKind::Rollback => "rollback",
            RolloutKind::Restart => "restart",
        }
        .into(),
        state: r.state.as_str().into(),
        phase: match r.state {
            RolloutState::Running => pb::RolloutPhase::Running,
            RolloutState::Paused => pb::RolloutPhase::Paused,
            RolloutState::WaitingPromotion => pb::RolloutPhase::WaitingPromotion,
            RolloutState::Succeeded => pb::RolloutPhase::Succeeded,
            RolloutState::Failed => pb::RolloutPhase::Failed,
        } as i32,
        promoted: r.promoted,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        reason: r.reason.clone(),
        updated,
        healthy,
        old,
        desired: desired_replicas(state, job),
    }
}

/// What changed between two versions of a spec, one line per field
/// (`replicas` is not versioned: scaling is not a change of version).
pub fn spec_changes(old: &JobSpec, new: &JobSpec) -> Vec<String> {
    let flat = |s: &JobSpec| {
        let mut out = std::collections::BTreeMap::new();
        if let serde_json::Value::Object(m) = serde_json::to_value(s).expect("a spec serializes") {
            for (k, v) in m {
                let text = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match (k.as_str(), v) {
                    ("replicas", _) => {}
                    (_, serde_json::Value::Object(inner)) => {
                        for (ik, iv) in inner {
                            out.insert(format!("{k}.{ik}"), text(&iv));
                        }
                    }
                    (_, v) => {
                        out.insert(k, text(&v));
                    }
                }
            }
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(none)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} -> {}",
                a.get(k).unwrap_or(&none),
                b.get(k).unwrap_or(&none)
            )
        })
        .collect()
}

/// The wire form of event `e`, made by log entry `index` as its `seq`th.
pub fn event(index: u64, seq: u32, e: crate::state::events::Event) -> pb::Event {
    pb::Event {
        index,
        seq,
        at_ms: e.at_ms,
        topic: event_topic(e.kind.topic()) as i32,
        r#type: event_type(e.kind) as i32,
        job: e.job,
        version: e.version,
        alloc: e.alloc,
        node: e.node,
        message: e.message,
    }
}

pub fn event_topic(t: crate::state::events::Topic) -> pb::EventTopic {
    use crate::state::events::Topic;
    match t {
        Topic::Job => pb::EventTopic::Job,
        Topic::Rollout => pb::EventTopic::Rollout,
        Topic::Alloc => pb::EventTopic::Alloc,
        Topic::Node => pb::EventTopic::Node,
        Topic::Cluster => pb::EventTopic::Cluster,
    }
}

/// A topic from the wire (`None`: unspecified or unknown).
pub fn topic_from_wire(t: i32) -> Option<crate::state::events::Topic> {
    use crate::state::events::Topic;
    match pb::EventTopic::try_from(t).ok()? {
        pb::EventTopic::Unspecified => None,
        pb::EventTopic::Job => Some(Topic::Job),
        pb::EventTopic::Rollout => Some(Topic::Rollout),
        pb::EventTopic::Alloc => Some(Topic::Alloc),
        pb::EventTopic::Node => Some(Topic::Node),
        pb::EventTopic::Cluster => Some(Topic::Cluster),
    }
}

fn event_type(k: crate::state::events::Kind) -> pb::EventType {
    use crate::state::events::Kind;
    use pb::EventType as T;
    match k {
        Kind::JobSubmitted => T::JobSubmitted,
        Kind::JobUpdated => T::JobUpdated,
        Kind::JobScaled => T::JobScaled,
        Kind::JobStopped => T::JobStopped,
        Kind::JobStartedAgain => T::JobStartedAgain,
        Kind::JobPurged => T::JobPurged,
        Kind::JobRestarted => T::JobRestarted,
        Kind::JobRunStarted => T::JobRunStarted,
        Kind::JobPending => T::JobPending,
        Kind::RolloutStarted => T::RolloutStarted,
        Kind::RolloutProgressed => T::RolloutProgressed,
        Kind::RolloutWaitingPromotion => T::RolloutWaitingPromotion,
        Kind::RolloutPromoted => T::RolloutPromoted,
        Kind::RolloutPaused => T::RolloutPaused,
        Kind::RolloutResumed => T::RolloutResumed,
        Kind::RolloutSucceeded => T::RolloutSucceeded,
        Kind::RolloutFailed => T::RolloutFailed,
        Kind::RolloutRolledBack => T::RolloutRolledBack,
        Kind::AllocPlaced => T::AllocPlaced,
        Kind::AllocStarted => T::AllocStarted,
        Kind::AllocHealthy => T::AllocHealthy,
        Kind::AllocUnhealthy => T::AllocUnhealthy,
        Kind::AllocRestarted => T::AllocRestarted,
        Kind::AllocOomKilled => T::AllocOomKilled,
        Kind::AllocStopping => T::AllocStopping,
        Kind::AllocStopped => T::AllocStopped,
        Kind::AllocFailed => T::AllocFailed,
        Kind::AllocEvicted => T::AllocEvicted,
        Kind::AllocLost => T::AllocLost,
        Kind::NodeRegistered => T::NodeRegistered,
        Kind::NodeReady => T::NodeReady,
        Kind::NodeDown => T::NodeDown,
        Kind::NodeCordoned => T::NodeCordoned,
        Kind::NodeUncordoned => T::NodeUncordoned,
        Kind::NodeDraining => T::NodeDraining,
        Kind::NodeLabelled => T::NodeLabelled,
        Kind::NodeNetworkDown => T::NodeNetworkDown,
        Kind::NodeNetworkUp => T::NodeNetworkUp,
        Kind::NodeRemoved => T::NodeRemoved,
        Kind::ClusterLeaderChanged => T::ClusterLeaderChanged,
        Kind::ClusterMemberAdded => T::ClusterMemberAdded,
        Kind::ClusterMemberPromoted => T::ClusterMemberPromoted,
        Kind::ClusterMemberRemoved => T::ClusterMemberRemoved,
        Kind::ClusterRestored => T::ClusterRestored,
    }
}

/// An event type as a word: `alloc-placed`.
pub fn event_word(k: crate::state::events::Kind) -> String {
    event_type(k)
        .as_str_name()
        .trim_start_matches("EVENT_TYPE_")
        .to_lowercase()
        .replace('_', "-")
}
