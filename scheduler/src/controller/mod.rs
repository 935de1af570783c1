//! Leader-only controllers: node liveness and job reconciliation.
//!
//! They run on every peer but act only while it leads, and change state
//! only by proposing commands; everything they need is in the replicated
//! state, so a new leader picks up where the old one stood. Liveness is the
//! exception by design: heartbeats live in the leader's memory, and a new
//! leader counts every node from its own election, so it gives agents the
//! whole fencing interval to find it before marking any node down. What a
//! node's heartbeats say of its container network is kept the same way; a
//! change is committed (`Command::SetNodeNetwork`), because placement must
//! see it in the replicated state.

mod liveness;
mod version;

pub use liveness::{node_transitions, Liveness};

use crate::clock::now_ms;
use crate::cluster::{Peer, PeerError};
use crate::reconcile::{reconcile, Plan};
use crate::state::{Command, NodeStatus};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often a leader whose cluster runs below this release's version asks
/// the members whether they all support it now.
const VERSION_EVERY: Duration = Duration::from_secs(2);

/// The most placements, and stops, in one log entry: a pass may place a
/// whole restored cluster's replicas, and one log entry must reach the
/// followers within the heartbeat interval (a placement is some 500 bytes
/// of JSON, a stop some 40).
const PLACE_PER_ENTRY: usize = 512;
const STOP_PER_ENTRY: usize = 4096;

pub struct Controller {
    pub peer: Peer,
    pub liveness: Liveness,
    pub node_timeout: Duration,
    /// Forget nodes down for longer than this (`None`: never).
    pub node_gc_after: Option<Duration>,
    /// How long each pass takes (see `crate::metrics`).
    pub pass_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Controller {
    pub async fn run(self, mut stop: broadcast::Receiver<()>) {
        let mut applied = self.peer.applied.clone();
        let mut leading_since: Option<Instant> = None;
        // Under a stream of writes every apply wakes the controller: rest
        // as long as the last pass took, so planning (which copies and
        // walks the state) never takes more than half the time, and the
        // changes that arrive meanwhile are planned for in one pass.
        let mut rest = Duration::ZERO;
        // When this leader last asked the members what they support.
        let mut versions_asked: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.recv() => return,
                _ = tokio::time::sleep(rest) => {}
            }
            tokio::select! {
                _ = stop.recv() => return,
                r = applied.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            rest = Duration::ZERO;
            if !self.peer.is_leader() {
                leading_since = None;
                continue;
            }
            let since = match leading_since {
                Some(since) => since,
                None => {
                    // Plan on nothing older than this term: confirm leadership
                    // and apply everything committed before acting.
                    if let Err(e) = self.peer.read_index_here().await {
                        tracing::debug!(error = %e, "new leader not caught up yet");
                        continue;
                    }
                    self.liveness.reset();
                    *leading_since.insert(Instant::now())
                }
            };
            let started = Instant::now();
            if let Err(e) = self.tick(since).await {
                tracing::debug!(error = %e, "controller step failed; retrying");
            }
            rest = started.elapsed();
            self.pass_seconds.observe(rest.as_secs_f64());
            if versions_asked.is_none_or(|t| t.elapsed() >= VERSION_EVERY) {
                versions_asked = Some(Instant::now());
                if let Err(e) = version::raise(&self.peer).await {
                    tracing::debug!(error = %e, "raising the cluster version failed; retrying");
                }
            }
        }
    }

    async fn tick(&self, leading_since: Instant) -> Result<(), PeerError> {
        let state = self.peer.snapshot();
        // One node at a time, each judged as its write begins: writes may
        // take long, and a node heard from meanwhile is not marked down.
        for node in state.nodes.values() {
            let due = node_transitions(
                std::iter::once(node),
                |name| self.liveness.last_seen(name),
                leading_since,
                Instant::now(),
                // Not before the node has certainly stopped its replicas
                // (see `drover_proto::fencing`).
                drover_proto::fencing::replace_after(self.node_timeout),
            );
            for (name, status) in due {
                tracing::info!(node = %name, status = status.as_str(), "node status changed");
                self.peer
                    .write(Command::SetNodeStatus {
                        name,
                        status,
                        at_ms: now_ms(),
                    })
                    .await?;
            }
        }
        if let Some(gc) = self.node_gc_after {
            let gc_ms = i64::try_from(gc.as_millis()).unwrap_or(i64::MAX);
            for node in state.nodes.values() {
                if node.status == NodeStatus::Down && now_ms() - node.updated_at_ms > gc_ms {
                    tracing::info!(node = %node.name, "forgetting a node down for longer than --node-gc-after");
                    self.peer
                        .write(Command::RemoveNode {
                            name: node.name.clone(),
                            reason: format!("down for longer than {}s", gc.as_secs()),
                            at_ms: now_ms(),
                        })
                        .await?;
                }
            }
        }
        let mut network_changed = false;
        for node in state.nodes.values() {
            let Some(error) = self.liveness.network(&node.name) else {
                continue;
            };
            if node.status != NodeStatus::Ready {
                continue;
            }
            if error == node.network_error {
                continue;
            }
            if error.is_empty() {
                tracing::info!(node = %node.name, "node's container network works again");
            } else {
                tracing::warn!(node = %node.name, error = %error, "node's container network is unavailable; no private-network replicas go there");
            }
            self.peer
                .write(Command::SetNodeNetwork {
                    name: node.name.clone(),
                    error,
                    at_ms: now_ms(),
                })
                .await?;
            network_changed = true;
        }
        self.advance_ca_rotation(&state).await?;
        // Placement must see the change at once.
        let state = if network_changed {
            self.peer.snapshot()
        } else {
            state
        };
        let plan = reconcile(&state, now_ms(), &mut || {
            format!("{:032x}", rand::random::<u128>())
        });
        if !plan.is_empty() {
            self.propose(plan).await?;
        }
        Ok(())
    }

    /// Moves a CA rotation to its next phase once every peer and every
    /// ready node caught up with this one (see `crate::state::ca`).
    async fn advance_ca_rotation(&self, state: &crate::state::State) -> Result<(), PeerError> {
        let Some(r) = &state.ca_rotation else {
            return Ok(());
        };
        if r.phase == crate::state::ca::Phase::Done {
            return Ok(());
        }
        let peers_at = self.peers_at();
        let nodes: Vec<(String, crate::state::ca::NodeTrust)> = state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Ready)
            .map(|n| (n.name.clone(), self.liveness.trust(&n.name)))
            .collect();
        if let Ok(next) = r.may_advance(now_ms(), &peers_at, &nodes) {
            tracing::info!(from = %r.phase, to = %next, "CA rotation: everyone caught up; next phase");
            self.peer
                .write(Command::AdvanceCaRotation {
                    from: r.phase,
                    new_subject: r.new_subject.clone(),
                    at_ms: now_ms(),
                })
                .await?;
        }
        Ok(())
    }

    /// The log index every voter has, as this leader knows it (itself: what
    /// it applied).
    pub fn peers_at(&self) -> Vec<(u64, u64)> {
        peers_at(&self.peer)
    }

    async fn propose(&self, plan: Plan) -> Result<(), PeerError> {
        let at_ms = now_ms();
        if !plan.stop.is_empty() {
            // One command per reason keeps each allocation's reason exact.
            let mut by_reason: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (id, reason) in plan.stop {
                by_reason.entry(reason).or_default().push(id);
            }
            for (reason, ids) in by_reason {
                for ids in ids.chunks(STOP_PER_ENTRY) {
                    self.peer
                        .write(Command::StopAllocations {
                            ids: ids.to_vec(),
                            reason: reason.clone(),
                            at_ms,
                        })
                        .await?;
                }
            }
        }
        let mut place = plan.place;
        while !place.is_empty() {
            let rest = place.split_off(place.len().min(PLACE_PER_ENTRY));
            self.peer
                .write(Command::PlaceAllocations {
                    allocations: place,
                    at_ms,
                })
                .await?;
            place = rest;
        }
        for (job, reason) in plan.pending {
            self.peer
                .write(Command::SetPendingReason {
                    job,
                    reason,
                    at_ms: now_ms(),
                })
                .await?;
        }
        for name in plan.purge {
            self.peer
                .write(Command::PurgeJob {
                    name,
                    at_ms: now_ms(),
                })
                .await?;
        }
        for (job, rollout) in plan.rollouts {
            if rollout.state.is_done() {
                tracing::info!(job = %job, version = rollout.version, state = rollout.state.as_str(), reason = %rollout.reason, "rollout ended");
            }
            self.peer
                .write(Command::SetRollout { job, rollout })
                .await?;
        }
        for (name, scheduled_ms) in plan.launch {
            tracing::info!(job = %name, scheduled_ms, "periodic job due");
            self.peer
                .write(Command::LaunchRun {
                    request_id: String::new(),
                    name,
                    scheduled_ms: Some(scheduled_ms),
                    at_ms,
                })
                .await?;
        }
        for (name, to, reason, expect) in plan.rollbacks {
            tracing::warn!(job = %name, to, reason = %reason, "rolling back");
            self.peer
                .write(Command::RollbackJob {
                    request_id: String::new(),
                    name,
                    to: Some(to),
                    reason,
                    at_ms,
                    expect: Some(expect),
                })
                .await?;
        }
        Ok(())
    }
}

/// The log index every voter of `peer`'s cluster has, as the leader
/// knows it (itself: what it applied; a voter it has no news of: 0).
pub fn peers_at(peer: &Peer) -> Vec<(u64, u64)> {
    let m = peer.metrics().borrow().clone();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    m.membership_config
        .membership()
        .voter_ids()
        .map(|id| {
            let at = if id == m.id {
                applied
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0)
            };
            (id, at)
        })
        .collect()
}
