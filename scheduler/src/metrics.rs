//! The scheduler peer's Prometheus metrics (`--http-listen`, `/metrics`).
//!
//! Counters and histograms are kept as things happen: Raft's log writes
//! and appends (`crate::raft::stats`), the events applied entries made
//! (placements are `drover_events_total{type="alloc-placed"}`), the API's
//! calls (`crate::server::observe`), the controller's planning passes.
//! Gauges are read from Raft and the replicated state when scraped: the
//! term, log and applied indexes, who leads, how far each follower is
//! behind, jobs, replicas by state and pending, rollouts and nodes by
//! state, event subscribers.

use crate::cluster::Peer;
use crate::events::EventHub;
use crate::raft::stats::{Labels, RaftStats};
use crate::state::{Desired, NodeStatus};
use drover_proto::http::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the scheduler counts besides Raft and the API.
#[derive(Clone, Debug)]
pub struct SchedulerStats {
    /// One controller pass: look at the state, plan, propose.
    pub pass_seconds: Histogram,
    /// How often this peer saw the leader change.
    pub leader_changes: Counter,
}

impl Default for SchedulerStats {
    fn default() -> Self {
        SchedulerStats {
            pass_seconds: Histogram::new(crate::raft::stats::latency_buckets()),
            leader_changes: Counter::default(),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers everything a peer measures into `m`, and the gauges read when
/// it is scraped.
pub fn register(
    m: &Metrics,
    peer: &Peer,
    hub: &Arc<EventHub>,
    raft: &RaftStats,
    scheduler: &SchedulerStats,
) {
    m.register(
        "raft_fsync_seconds",
        "One write of the Raft log and its fsync",
        raft.fsync_seconds.clone(),
    );
    m.register(
        "raft_append_seconds",
        "An append sent to a follower until its answer",
        raft.append_seconds.clone(),
    );
    m.register(
        "raft_snapshot_bytes",
        "The size of the last snapshot taken or installed",
        raft.snapshot_bytes.clone(),
    );
    m.register(
        "events",
        "Events applied entries made, by type",
        raft.events.clone(),
    );
    m.register(
        "scheduler_pass_seconds",
        "One controller pass on the leader: read the state, plan, propose",
        scheduler.pass_seconds.clone(),
    );
    m.register(
        "raft_leader_changes",
        "Times this peer saw the leader change",
        scheduler.leader_changes.clone(),
    );
    let gauge = |name: &str, help: &str| {
        let g: Gauge = Gauge::default();
        m.register(name, help, g.clone());
        g
    };
    let family = |name: &str, help: &str| {
        let f: Family<Labels, Gauge> = Family::default();
        m.register(name, help, f.clone());
        f
    };
    let term = gauge("raft_term", "The current Raft term");
    let last_log = gauge("raft_last_log_index", "The last index in this peer's log");
    let applied = gauge("raft_applied_index", "The last index this peer applied");
    let snapshot = gauge(
        "raft_snapshot_index",
        "The last index in this peer's snapshot",
    );
    let leader = gauge(
        "raft_leader_id",
        "The peer this one takes for leader (0: none)",
    );
    let is_leader = gauge("raft_is_leader", "1 on the leader");
    let lag = family(
        "raft_follower_lag_entries",
        "On the leader: entries each peer is behind its log",
    );
    let jobs = family("jobs", "Jobs, by state (running or stopped)");
    let allocations = family(
        "allocations",
        "Allocations the scheduler wants running, by their reported state",
    );
    let pending = gauge(
        "pending_replicas",
        "Replicas jobs want that have no allocation",
    );
    let rollouts = family("rollouts", "Rollouts, by state");
    let nodes = family("nodes", "Nodes, by status and schedulability");
    let subscribers = gauge("event_subscribers", "Event streams open on this peer");

    let (peer, hub) = (peer.clone(), hub.clone());
    m.on_scrape(move || {
        let r = peer.raft.metrics().borrow().clone();
        term.set(r.current_term as i64);
        last_log.set(r.last_log_index.unwrap_or(0) as i64);
        applied.set(r.last_applied.map_or(0, |l| l.index) as i64);
        snapshot.set(r.snapshot.map_or(0, |l| l.index) as i64);
        leader.set(r.current_leader.unwrap_or(0) as i64);
        is_leader.set(i64::from(r.current_leader == Some(r.id)));
        lag.clear();
        if let Some(replication) = &r.replication {
            let last = r.last_log_index.unwrap_or(0);
            for (id, matched) in replication {
                let at = matched.map_or(0, |l| l.index);
                lag.get_or_create(&labels(&[("peer", &id.to_string())]))
                    .set(last.saturating_sub(at) as i64);
            }
        }
        subscribers.set(hub.subscribers());

        let state = peer.state.read().unwrap_or_else(|p| p.into_inner());
        let mut by_job: BTreeMap<&str, u32> = BTreeMap::new();
        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for a in state.allocations.values() {
            if a.desired == Desired::Run {
                *by_state.entry(a.state.as_str()).or_default() += 1;
                if !a.state.is_terminal() {
                    *by_job.entry(a.job.as_str()).or_default() += 1;
                }
            }
        }
        allocations.clear();
        for (s, n) in by_state {
            allocations.get_or_create(&labels(&[("state", s)])).set(n);
        }
        let (mut running, mut stopped, mut missing) = (0, 0, 0i64);
        let mut by_rollout: BTreeMap<&str, i64> = BTreeMap::new();
        for j in state.jobs.values() {
            if j.stopped {
                stopped += 1;
                continue;
            }
            running += 1;
            let want = crate::server::convert::desired_replicas(&state, j);
            let have = by_job.get(j.name.as_str()).copied().unwrap_or(0);
            missing += i64::from(want.saturating_sub(have));
            if let Some(r) = &j.rollout {
                *by_rollout.entry(r.state.as_str()).or_default() += 1;
            }
        }
        jobs.get_or_create(&labels(&[("state", "running")]))
            .set(running);
        jobs.get_or_create(&labels(&[("state", "stopped")]))
            .set(stopped);
        pending.set(missing);
        rollouts.clear();
        for (s, n) in by_rollout {
            rollouts.get_or_create(&labels(&[("state", s)])).set(n);
        }
        let mut by_node: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for n in state.nodes.values() {
            let schedulable = match (n.schedulable, n.draining) {
                (_, true) => "draining",
                (true, false) => "schedulable",
                (false, false) => "cordoned",
            };
            let status = match n.status {
                NodeStatus::Ready => "ready",
                NodeStatus::Down => "down",
            };
            *by_node.entry((status, schedulable)).or_default() += 1;
        }
        nodes.clear();
        for ((status, schedulable), n) in by_node {
            nodes
                .get_or_create(&labels(&[("status", status), ("schedulable", schedulable)]))
                .set(n);
        }
    });
}

/// Counts leader changes as this peer sees them, until Raft stops.
pub async fn count_leader_changes(peer: Peer, counter: Counter) {
    let mut metrics = peer.raft.metrics();
    let mut leader = metrics.borrow().current_leader;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_leader;
        if now != leader && now.is_some() {
            counter.inc();
        }
        leader = now;
    }
}

/// Who may read `/metrics` of a peer: anyone until the cluster has ACLs,
/// then a token that may read the whole cluster.
pub fn authorize(peer: Peer) -> drover_proto::http::Authorize {
    Arc::new(move |headers, _from| {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(crate::server::access::bearer);
        let state = peer.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .acl
            .authorize(
                token,
                crate::clock::now_ms(),
                crate::state::acl::Permission::Read,
                None,
                "read metrics",
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
