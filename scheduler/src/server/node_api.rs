//! The node API (`drover.v1.NodeService`): what agents call.
//!
//! Registration and status reports are commands in the log. Heartbeats are
//! not: the leader keeps the last time it heard from each node in memory
//! (`Liveness`) and commits only the transition to down or back. `Watch`
//! streams the complete set of allocations desired on a node whenever it
//! changes (level-triggered, DESIGN decision 3), taken from the view of
//! every node's set that `fanout` keeps current.

use crate::cluster::Peer;
use crate::controller::Liveness;
use crate::state::version::PLACEMENT_RULES;
use crate::state::Attributes;
use crate::state::{AllocState, AllocationReport, Command};
use drover_proto::pb::{self, node_service_server::NodeService};
use drover_proto::spec::constraint::attributes_digest;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How often a watch stream checks that its peer is still in touch.
const WATCH_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

pub struct NodeApi {
    pub peer: Peer,
    pub liveness: Liveness,
    /// The node timeout agents fence themselves by (see `drover_proto::fencing`).
    pub node_timeout: std::time::Duration,
    /// The container address range nodes get their subnets from.
    pub cluster_cidr: String,
    /// The CAs this peer trusts and signs with (`None` without TLS).
    pub authority: Option<crate::pki::Authority>,
    /// Unseals the secrets a node's replicas mount (see `crate::secrets`).
    pub secrets: std::sync::Arc<crate::secrets::SecretKey>,
    /// Every node's desired set, kept current (see `fanout`).
    pub desired: tokio::sync::watch::Receiver<std::sync::Arc<super::fanout::DesiredView>>,
}

impl NodeApi {
    /// Records a heartbeat on the leader. Only a leader holding its quorum
    /// lease may: an acknowledgement keeps the agent's replicas running.
    fn acknowledge(&self, beat: &pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        let (name, network_error) = (beat.name.as_str(), beat.network_error.as_str());
        if !self.peer.holds_lease() {
            return Err(Status::unavailable(
                "this peer is not a leader a majority acknowledges; ask another peer",
            ));
        }
        let known = {
            let state = self.peer.state.read().expect("state lock");
            match state.nodes.get(name) {
                None => false,
                // What it registered with is not what is held (a cluster
                // before version 4 recorded none): it registers again.
                Some(n)
                    if !beat.attributes_digest.is_empty()
                        && state.cluster_version() >= PLACEMENT_RULES =>
                {
                    attributes_digest(&n.labels, &n.facts) == beat.attributes_digest
                }
                Some(_) => true,
            }
        };
        if known {
            self.liveness.beat(name);
            self.liveness.network_reported(name, network_error);
            self.liveness.trust_reported(
                name,
                crate::state::ca::NodeTrust {
                    bundle_id: beat.ca_bundle_id.clone(),
                    issuer: beat.cert_issuer.clone(),
                },
            );
        }
        let (ca_bundle_id, signing_ca) = match &self.authority {
            Some(a) => (
                drover_proto::pki::ca::bundle_id(&a.bundle()),
                a.signing().subject(),
            ),
            None => Default::default(),
        };
        Ok(pb::HeartbeatResponse {
            known,
            node_timeout_ms: u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX),
            ca_bundle_id,
            signing_ca,
        })
    }
}

/// The labels and facts a registering agent sends, checked: labels as
/// `drover node label` takes them, facts under the same rules for keys and
/// at most 256 characters each.
#[allow(clippy::result_large_err)]
fn attributes(req: &pb::RegisterRequest) -> Result<(Attributes, Attributes), Status> {
    use drover_proto::spec::constraint::{attribute_key, label_key, label_value};
    const MAX: usize = 64;
    if req.labels.len() > MAX || req.facts.len() > MAX {
        return Err(Status::invalid_argument(format!(
            "at most {MAX} labels and {MAX} facts"
        )));
    }
    for (k, v) in &req.labels {
        label_key(k)
            .and_then(|()| label_value(v))
            .map_err(|m| Status::invalid_argument(format!("labels: {m}")))?;
    }
    for (k, v) in &req.facts {
        attribute_key(k).map_err(|m| Status::invalid_argument(format!("facts: {m}")))?;
        if v.len() > 256 || v.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "facts: {k}: at most 256 characters, no NUL"
            )));
        }
    }
    Ok((req.labels.clone(), req.facts.clone()))
}

/// A node speaks only for itself: a call about node `name` must come with
/// that node's certificate (or from a peer passing a heartbeat on, which
/// checked it). Without TLS there is no identity to check.
fn speaks_for<T>(req: &Request<T>, name: &str) -> Result<(), Status> {
    use drover_proto::pki::Identity;
    match drover_proto::pki::tls::peer_identity(req) {
        None | Some(Identity::Scheduler(_)) => Ok(()),
        Some(Identity::Node(n)) if n == name => Ok(()),
        Some(other) => {
            tracing::warn!(caller = %other, node = name, "refused: a caller spoke for another node");
            Err(Status::permission_denied(format!(
                "{other} may not speak for node {name}"
            )))
        }
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        speaks_for(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        drover_proto::spec::dns_label(&req.name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        for v in &req.volumes {
            drover_proto::spec::dns_label(&v.name)
                .map_err(|e| Status::invalid_argument(format!("volumes: {e}")))?;
        }
        if req.cpu_millis == 0 || req.memory_bytes == 0 {
            return Err(Status::invalid_argument(
                "cpu_millis and memory_bytes must be more than 0",
            ));
        }
        let (labels, facts) = attributes(&req)?;
        // A cluster before version 4 cannot hold them (replicas of the
        // release before would not apply it); the agent's heartbeats bring
        // them once it can (see `acknowledge`).
        let (labels, facts) = if self.peer.cluster_version() >= PLACEMENT_RULES {
            (labels, facts)
        } else {
            Default::default()
        };
        let r = self
            .peer
            .write(Command::RegisterNode {
                name: req.name.clone(),
                address: req.address,
                cpu_millis: req.cpu_millis,
                memory_bytes: req.memory_bytes,
                at_ms: crate::clock::now_ms(),
                cluster_cidr: self.cluster_cidr.clone(),
                volumes: req
                    .volumes
                    .iter()
                    .map(|v| (v.name.clone(), v.read_only))
                    .collect(),
                disk_bytes: req.disk_bytes,
                labels,
                facts,
            })
            .await?;
        let r = r.accepted()?;
        // Only the leader keeps liveness; through a follower, the agent's
        // next heartbeat (sent right after registering) reaches it.
        if self.peer.holds_lease() {
            self.liveness.beat(&req.name);
        }
        Ok(Response::new(pb::RegisterResponse {
            name: req.name,
            subnet: r.note,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        speaks_for(&req, &req.get_ref().name)?;
        let forwarded = req
            .metadata()
            .contains_key(crate::cluster::forward::FORWARDED);
        let req = req.into_inner();
        if !self.peer.is_leader() {
            if forwarded {
                return Err(Status::unavailable("not the leader"));
            }
            let via = crate::cluster::forward::heartbeat_via_leader(&self.peer, req.clone());
            if let Some(r) = via.await? {
                return Ok(Response::new(r));
            }
        }
        self.acknowledge(&req).map(Response::new)
    }

    type WatchStream = ReceiverStream<Result<pb::DesiredAllocations, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        speaks_for(&req, &req.get_ref().name)?;
        let pb::WatchRequest { name, deltas } = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let peer = self.peer.clone();
        let mut views = self.desired.clone();
        tokio::spawn(async move {
            // What was sent so far: a set is sent again only when
            // something in it changed, and to an agent that takes deltas
            // (`drover_proto::desired`) only what changed.
            let mut sent: Option<super::fanout::Sent> = None;
            loop {
                let view = views.borrow_and_update().clone();
                let message = view.next_for(&name, &mut sent, deltas);
                if let Some(message) = message {
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = views.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(WATCH_CHECK) => {
                        // A peer cut off from the leader (or a leader cut off
                        // from its majority) must not look like a live link.
                        if !peer.in_touch(WATCH_CHECK * 2) {
                            let why = "this peer lost touch with the cluster's majority; reconnect to another";
                            let _ = tx.send(Err(Status::unavailable(why))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        speaks_for(&req, &req.get_ref().node)?;
        let req = req.into_inner();
        let mut reports = Vec::new();
        for r in req.allocations {
            reports.push(report_from_wire(r)?);
        }
        // Skip the write when nothing is new: agents re-send reports freely.
        // Only a leader holding its lease may judge that; a follower's view
        // (or a deposed leader's) may be older than the report's news, and
        // an acknowledged report is one the agent does not send again.
        if self.peer.holds_lease() {
            let s = self.peer.state.read().expect("state lock");
            reports.retain(|r| match s.allocations.get(&r.id) {
                Some(a) => {
                    a.node == req.node
                        && (a.state != r.state
                            || a.pid != r.pid
                            || a.exit_code != r.exit_code
                            || a.restarts != r.restarts
                            || a.health != r.health
                            || a.ip != r.ip
                            || (!r.reason.is_empty() && a.reason != r.reason))
                }
                None => false,
            });
        }
        if !reports.is_empty() {
            self.peer
                .write(Command::ReportAllocations {
                    node: req.node,
                    reports,
                    at_ms: crate::clock::now_ms(),
                })
                .await?;
        }
        Ok(Response::new(pb::ReportResponse {}))
    }
}

/// An agent's report in the state machine's terms. The typed phase and
/// health decide; agents of the release before send the words only.
fn report_from_wire(r: pb::AllocationReport) -> Result<AllocationReport, Status> {
    use drover_proto::text::{clip, REPORT_TEXT_MAX};
    let phase = match r.phase() {
        pb::AllocationPhase::Unspecified => pb::AllocationPhase::from_word(&r.state),
        p => Some(p),
    };
    let state = phase.and_then(AllocState::from_phase).ok_or_else(|| {
        Status::invalid_argument(format!("allocations.state: {:?} is not a state", r.state))
    })?;
    let health = match r.health_state() {
        pb::Health::Unknown => pb::Health::from_word(&r.health),
        h => h,
    };
    Ok(AllocationReport {
        id: r.id,
        state,
        pid: r.pid,
        exit_code: r.exit_code,
        // An agent's words, bounded: a report is never refused for them
        // (the agent would send it again forever).
        reason: clip(r.reason, REPORT_TEXT_MAX),
        restarts: r.restarts,
        health: crate::state::HealthState::from_wire(health),
        ip: r.ip,
        health_detail: clip(r.health_detail, REPORT_TEXT_MAX),
        restarting_at_ms: r.restarting_at_ms,
        killed_at_grace: r.killed_at_grace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_go_by_the_typed_phase_and_read_old_agents_words() {
        let typed = pb::AllocationReport {
            id: "a1".into(),
            state: "words an old scheduler would read".into(),
            phase: pb::AllocationPhase::Running as i32,
            health_state: pb::Health::Unhealthy as i32,
            ..Default::default()
        };
        let r = report_from_wire(typed).unwrap();
        assert_eq!(r.state, AllocState::Running);
        assert_eq!(r.health, crate::state::HealthState::Unhealthy);
        let old = pb::AllocationReport {
            id: "a1".into(),
            state: "failed".into(),
            health: "healthy".into(),
            ..Default::default()
        };
        let r = report_from_wire(old).unwrap();
        assert_eq!(r.state, AllocState::Failed);
        assert_eq!(r.health, crate::state::HealthState::Healthy);
        let neither = pb::AllocationReport {
            id: "a1".into(),
            state: "sleeping".into(),
            ..Default::default()
        };
        let e = report_from_wire(neither).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn an_agents_long_words_are_cut_not_refused() {
        // A probe's output or an error quoting a whole file: 2 MiB.
        let long = pb::AllocationReport {
            id: "a1".into(),
            phase: pb::AllocationPhase::Failed as i32,
            reason: "r".repeat(2 << 20),
            health_detail: "h".repeat(2 << 20),
            ..Default::default()
        };
        let r = report_from_wire(long).unwrap();
        let max = drover_proto::text::REPORT_TEXT_MAX;
        assert!(r.reason.len() <= max && r.reason.starts_with("rrrr"));
        assert!(r.health_detail.len() <= max && r.health_detail.ends_with("bytes cut)"));
    }
}
