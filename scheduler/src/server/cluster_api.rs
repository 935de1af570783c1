//! The cluster API (`drover.v1.Cluster`): the peers themselves.
//!
//! Operators list, add and remove peers (`drover cluster ...`); a
//! membership change is made by the leader, so a follower passes it on.
//! Peers call each other's `Forward` (have the leader propose a command)
//! and `ReadIndex` (have the leader confirm a linearizable read); both act
//! only on this peer and are never forwarded again, so a request can
//! never loop between peers.

use crate::cluster::forward::{self, FORWARDED};
use crate::cluster::peer::Peer;
use crate::raft;
use crate::state::acl::Permission;
use crate::state::{backup, Command};
use drover_proto::pb::{self, cluster_server::Cluster};
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct ClusterApi {
    pub peer: Peer,
    /// The cluster CA (signs join tokens); `None` on a plaintext cluster.
    pub authority: Option<crate::pki::Authority>,
    /// What nodes told this peer (when it leads) of their trust.
    pub liveness: crate::controller::Liveness,
    /// The key secrets are sealed with: a restored snapshot's secrets must
    /// be sealed with it too.
    pub secrets: std::sync::Arc<crate::secrets::SecretKey>,
}

/// Snapshot files travel in chunks of this size (gRPC messages stay small).
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The largest snapshot file a restore takes (it is held in memory whole).
const SNAPSHOT_MAX: usize = 256 << 20;

/// About how much of a restore goes in one log entry: every entry must be
/// encoded, sent, decoded and made durable on a follower within openraft's
/// heartbeat interval (its AppendEntries deadline), or it is never
/// replicated. 128KiB of JSON takes a few milliseconds in a release build
/// and some 15 in a debug build on a busy 2-core machine.
const RESTORE_PART_BYTES: usize = 128 << 10;

fn plaintext() -> Status {
    Status::failed_precondition(
        "this cluster runs without TLS (--insecure-plaintext): it has no CA",
    )
}

fn raft_status(e: raft::Error) -> Status {
    match e {
        raft::Error::NotLeader { .. } => crate::cluster::PeerError::from(e).into(),
        raft::Error::NoQuorum(_) => Status::unavailable(e.to_string()),
        raft::Error::Membership(_) => Status::failed_precondition(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl ClusterApi {
    /// Proposes a command a follower forwarded (`Command` as JSON);
    /// the index it committed at and its result as JSON.
    async fn propose_forwarded(&self, command_json: &[u8]) -> Result<(u64, Vec<u8>), Status> {
        let cmd: Command = serde_json::from_slice(command_json)
            .map_err(|e| Status::invalid_argument(format!("command_json: {e}")))?;
        let (index, result) = self.peer.write_here(cmd).await?;
        let result_json = serde_json::to_vec(&result)
            .map_err(|e| Status::internal(format!("encoding a command result: {e}")))?;
        Ok((index, result_json))
    }

    fn local_status(&self) -> pb::MemberStatus {
        // Before the borrow below: `in_touch` borrows the metrics too, and a
        // second read of that lock while openraft waits to write it
        // deadlocks the thread (parking_lot lets the writer go first).
        let in_touch = self.peer.in_touch(crate::cluster::peer::CUT_OFF);
        let m = self.peer.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        pb::MemberStatus {
            id: self.peer.id,
            address: self.peer.addr.clone(),
            role: role(m.state).to_string(),
            voter: membership.voter_ids().any(|v| v == self.peer.id),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            in_touch,
            supports_version: crate::state::version::SUPPORTED,
            release: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Refuses a new peer at `addr` whose release does not implement the
    /// version the cluster runs at: it could not apply the log. (One that
    /// does not answer yet is let in: it says what it supports later, and
    /// refuses to apply what it cannot.)
    async fn refuse_older_release(&self, addr: &str) -> Result<(), Status> {
        let runs = self.peer.cluster_version();
        let Some(s) = self.peer.status_of(addr).await else {
            return Ok(());
        };
        let supports = s.supports_version.max(crate::state::version::BASE);
        if supports < runs {
            return Err(Status::failed_precondition(format!(
                "the peer at {addr} runs a release that implements cluster version {supports}, and this cluster runs at {runs}: run a release of this cluster's version or newer on it"
            )));
        }
        Ok(())
    }

    /// Every member of this peer's membership with its own status.
    async fn members_here(&self, stale: bool) -> pb::MembersResponse {
        let (nodes, voters) = {
            let m = self.peer.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let nodes: Vec<(u64, String)> = membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect();
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            (nodes, voters)
        };
        let asks = nodes.into_iter().map(|(id, addr)| {
            let voter = voters.contains(&id);
            async move {
                if id == self.peer.id {
                    return self.local_status();
                }
                let unreachable = pb::MemberStatus {
                    id,
                    address: addr.clone(),
                    role: "unreachable".into(),
                    voter,
                    ..Default::default()
                };
                match self.peer.status_of(&addr).await {
                    Some(s) => pb::MemberStatus { voter, ..s },
                    None => unreachable,
                }
            }
        });
        let members = futures::future::join_all(asks).await;
        let leader_id = self.peer.metrics().borrow().current_leader.unwrap_or(0);
        let applied = *self.peer.applied.borrow();
        let (cluster_version, read) = self
            .peer
            .read(true, |s| s.cluster_version())
            .await
            .unwrap_or((0, pb::ReadInfo::default()));
        pb::MembersResponse {
            members,
            cluster_version,
            leader_id,
            read: Some(pb::ReadInfo {
                stale,
                applied_index: applied,
                ..read
            }),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        super::access::check(&self.peer, &req, Permission::Read, None, "list members")?;
        let stale = req.get_ref().read.as_ref().is_some_and(|r| r.stale);
        if stale {
            return Ok(Response::new(self.members_here(true).await));
        }
        let r = forward::with_leader(&self.peer, |leader| async move {
            match leader {
                None => Ok::<_, Status>(self.members_here(false).await),
                Some(addr) => Ok(self
                    .peer
                    .forwarder
                    .cluster(&addr)?
                    .members(pb::MembersRequest { read: None })
                    .await?
                    .into_inner()),
            }
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        refuse_second_hop(&self.peer, &req)?;
        super::access::check(&self.peer, &req, Permission::Admin, None, "add members")?;
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("id: must not be 0"));
        }
        if !req.address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address: {:?} needs a host and a port",
                req.address
            )));
        }
        forward::with_leader(&self.peer, |leader| {
            let req = req.clone();
            async move {
                match leader {
                    Some(addr) => {
                        self.peer
                            .forwarder
                            .cluster(&addr)?
                            .add_member(forwarded(req))
                            .await
                    }
                    None => {
                        let is_voter = self
                            .peer
                            .metrics()
                            .borrow()
                            .membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == req.id);
                        if is_voter {
                            return Err(Status::already_exists(format!(
                                "peer {} is already a voting member",
                                req.id
                            )));
                        }
                        self.refuse_older_release(&req.address).await?;
                        tracing::info!(id = req.id, addr = %req.address, "adding a peer");
                        raft::add_voter(&self.peer.raft, req.id, &req.address)
                            .await
                            .map_err(raft_status)?;
                        Ok(Response::new(self.members_here(false).await))
                    }
                }
            }
        })
        .await
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        refuse_second_hop(&self.peer, &req)?;
        super::access::check(&self.peer, &req, Permission::Admin, None, "remove members")?;
        let req = req.into_inner();
        forward::with_leader(&self.peer, |leader| async move {
            match leader {
                Some(addr) => {
                    self.peer
                        .forwarder
                        .cluster(&addr)?
                        .remove_member(forwarded(req))
                        .await
                }
                None => {
                    let (member, voter) = {
                        let m = self.peer.metrics();
                        let m = m.borrow();
                        let ms = m.membership_config.membership();
                        (
                            ms.get_node(&req.id).is_some(),
                            ms.voter_ids().any(|v| v == req.id),
                        )
                    };
                    if !member {
                        return Err(Status::not_found(format!(
                            "peer {} is not a member",
                            req.id
                        )));
                    }
                    tracing::info!(id = req.id, "removing a peer");
                    if voter {
                        raft::remove_voter(&self.peer.raft, req.id)
                            .await
                            .map_err(raft_status)?;
                    } else {
                        self.peer
                            .raft
                            .change_membership(
                                ChangeMembers::RemoveNodes(BTreeSet::from([req.id])),
                                false,
                            )
                            .await
                            .map_err(|e| Status::failed_precondition(e.to_string()))?;
                    }
                    Ok(Response::new(self.members_here(false).await))
                }
            }
        })
        .await
    }

    async fn local_status(
        &self,
        _req: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::MemberStatus>, Status> {
        Ok(Response::new(self.local_status()))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let (index, result_json) = self
            .propose_forwarded(&req.into_inner().command_json)
            .await?;
        Ok(Response::new(pb::ForwardResponse { result_json, index }))
    }

    async fn forward_batch(
        &self,
        req: Request<pb::ForwardBatchRequest>,
    ) -> Result<Response<pb::ForwardBatchResponse>, Status> {
        let commands = req.into_inner().commands_json;
        // Proposed together, so the batcher puts them in as few log
        // entries as it can; each answers as a `Forward` of it would.
        let outcomes = futures::future::join_all(commands.iter().map(|json| async move {
            match self.propose_forwarded(json).await {
                Ok((index, result_json)) => pb::ForwardOutcome {
                    result_json,
                    index,
                    ..Default::default()
                },
                Err(s) => crate::cluster::forward::failed_outcome(&s),
            }
        }))
        .await;
        Ok(Response::new(pb::ForwardBatchResponse { outcomes }))
    }

    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let index = self.peer.read_index_here().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        use drover_proto::pki::token::{JoinToken, Role, DEFAULT_TTL};
        super::access::check(
            &self.peer,
            &req,
            Permission::Admin,
            None,
            "create join tokens",
        )?;
        let r = req.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!("role: {:?} is neither agent nor scheduler", r.role))
        })?;
        let ttl = match r.ttl_seconds {
            0 => DEFAULT_TTL,
            s if s > 7 * 24 * 3600 => {
                return Err(Status::invalid_argument(
                    "ttl_seconds: at most 7 days (604800)",
                ))
            }
            s => Duration::from_secs(s),
        };
        let ca = self.authority.as_ref().ok_or_else(plaintext)?.signing();
        let token = JoinToken::create(&ca, role, ttl);
        let expires_unix = JoinToken::parse(&token)
            .map(|t| t.expires)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(
            role = role.as_str(),
            ttl_s = ttl.as_secs(),
            "join token created"
        );
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token,
            expires_unix,
        }))
    }

    async fn rotate_ca(
        &self,
        req: Request<pb::RotateCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        super::access::check(&self.peer, &req, Permission::Admin, None, "rotate the CA")?;
        let authority = self.authority.as_ref().ok_or_else(plaintext)?;
        let new = drover_proto::pki::ca::Ca::generate("rotated")
            .map_err(|e| Status::internal(format!("cannot make a CA: {e}")))?;
        let r = self
            .peer
            .write(Command::RotateCa {
                old_cert: authority.signing().cert_pem.clone(),
                new_cert: new.cert_pem.clone(),
                new_key: crate::state::ca::SecretPem(new.key_pem().to_string()),
                new_subject: new.subject(),
                min_phase_ms: i64::try_from(req.get_ref().min_phase_seconds.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        r.accepted()?;
        tracing::info!(new = %new.subject(), "CA rotation started");
        Ok(Response::new(self.ca_status().await?))
    }

    async fn get_ca_status(
        &self,
        req: Request<pb::CaStatusRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        super::access::check(
            &self.peer,
            &req,
            Permission::Read,
            None,
            "read the CA status",
        )?;
        Ok(Response::new(self.ca_status().await?))
    }

    type SnapshotSaveStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::SnapshotChunk, Status>>;

    async fn snapshot_save(
        &self,
        req: Request<pb::SnapshotSaveRequest>,
    ) -> Result<Response<Self::SnapshotSaveStream>, Status> {
        super::access::check(&self.peer, &req, Permission::Admin, None, "save snapshots")?;
        // Copied under the read lock (structure shared where it can be),
        // encoded outside it: applying is held up for the copy only.
        let (state, _) = self.peer.read(false, |s| s.clone()).await?;
        let now = crate::clock::now_ms();
        let file = tokio::task::spawn_blocking(move || backup::save(&state, now))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in file.chunks(SNAPSHOT_CHUNK) {
                let chunk = pb::SnapshotChunk {
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn snapshot_restore(
        &self,
        req: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotRestoreResponse>, Status> {
        super::access::check(
            &self.peer,
            &req,
            Permission::Admin,
            None,
            "restore snapshots",
        )?;
        let mut chunks = req.into_inner();
        let mut file = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            file.extend_from_slice(&chunk.data);
            if file.len() > SNAPSHOT_MAX {
                return Err(Status::invalid_argument(format!(
                    "snapshot larger than {} MiB: too large to restore in one step",
                    SNAPSHOT_MAX >> 20
                )));
            }
        }
        // Checked whole, and decoded, before anything changes.
        let (header, state) = tokio::task::spawn_blocking(move || backup::open(&file))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("snapshot: {e}")))?;
        if !state.secrets.is_empty() && state.secrets_key_id != self.secrets.id() {
            return Err(Status::failed_precondition(format!(
                "the snapshot's {} secrets are sealed with key {}, this cluster's is {}: restore into a cluster made with the same secrets.key (copy it beside the CA), or delete the secrets from the saved cluster first",
                state.secrets.len(),
                state.secrets_key_id,
                self.secrets.id()
            )));
        }
        let parts = tokio::task::spawn_blocking(move || {
            backup::Restored::from_state(state).split(RESTORE_PART_BYTES)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let r = if parts.len() == 1 {
            let restored = parts.into_iter().next().map(Box::new).unwrap_or_default();
            self.peer
                .write(Command::Restore {
                    restored,
                    from_index: header.index,
                    at_ms: crate::clock::now_ms(),
                })
                .await?
        } else {
            // On its own task: a client that goes away must not leave a
            // restore half staged.
            let peer = self.peer.clone();
            tokio::spawn(async move { restore_in_parts(&peer, parts, header.index).await })
                .await
                .map_err(|e| Status::internal(e.to_string()))??
        };
        let r = r.accepted()?;
        Ok(Response::new(pb::SnapshotRestoreResponse {
            index: *self.peer.applied.borrow(),
            from_index: header.index,
            note: r.note,
        }))
    }
}

impl ClusterApi {
    /// The rotation as the (linearizable) state says; what it waits for
    /// only the leader knows, so a follower asks it.
    async fn ca_status(&self) -> Result<pb::CaStatus, Status> {
        let authority = self.authority.as_ref().ok_or_else(plaintext)?;
        let (rotation, _) = self.peer.read(false, |s| s.ca_rotation.clone()).await?;
        let mut status = pb::CaStatus {
            phase: "none".into(),
            bundle_pem: authority.bundle(),
            signing_ca: authority.signing().subject(),
            ..Default::default()
        };
        if let Some(r) = rotation {
            status.phase = r.phase.to_string();
            status.since_ms = r.since_ms;
            // What this peer follows may lag the state by an apply: say
            // what the state says.
            status.bundle_pem = r.bundle();
            if r.phase >= crate::state::ca::Phase::Sign {
                status.signing_ca = r.new_subject.clone();
            }
            if self.peer.is_leader() {
                let nodes: Vec<(String, crate::state::ca::NodeTrust)> = self
                    .peer
                    .snapshot()
                    .nodes
                    .values()
                    .filter(|n| n.status == crate::state::NodeStatus::Ready)
                    .map(|n| (n.name.clone(), self.liveness.trust(&n.name)))
                    .collect();
                let at = crate::controller::peers_at(&self.peer);
                if let Err(w) = r.may_advance(crate::clock::now_ms(), &at, &nodes) {
                    status.waiting = w;
                }
            }
        }
        Ok(status)
    }
}

/// A membership change passed on to the leader, marked so that a peer
/// that is no longer the leader answers instead of passing it on again
/// (requests must not bounce between peers during an election).
fn forwarded<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}

/// Refuses a forwarded request on a peer that does not lead: the
/// peer that forwarded it finds the leader again itself.
fn refuse_second_hop<T>(peer: &Peer, req: &Request<T>) -> Result<(), Status> {
    if was_forwarded(req) && !peer.is_leader() {
        return Err(Status::unavailable(
            "not the leader (a forwarded request is not forwarded again)",
        ));
    }
    Ok(())
}

/// Whether a request was already forwarded by another peer.
pub fn was_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// Restores `parts` (of one snapshot taken at `from_index`) one log
/// entry each, in order; the last part's result is the restore's. A
/// part refused (another restore began meanwhile) ends it.
async fn restore_in_parts(
    peer: &crate::cluster::Peer,
    parts: Vec<backup::Restored>,
    from_index: u64,
) -> Result<crate::state::CommandResult, Status> {
    let (runs, _) = peer
        .read(false, crate::state::State::cluster_version)
        .await?;
    if runs < crate::state::version::RESTORE_IN_PARTS {
        return Err(Status::failed_precondition(format!(
            "this snapshot needs {} log entries to restore, and the cluster runs at version {runs}, before restores in parts (version {}): finish upgrading every scheduler replica first",
            parts.len(),
            crate::state::version::RESTORE_IN_PARTS
        )));
    }
    let restore = format!("{from_index}-{}-{}", peer.id, crate::clock::now_ms());
    let count = u32::try_from(parts.len())
        .map_err(|_| Status::invalid_argument("snapshot too large: too many parts"))?;
    let mut last = crate::state::CommandResult::default();
    for (part, restored) in (0..count).zip(parts) {
        last = peer
            .write(Command::RestorePart {
                restore: restore.clone(),
                part,
                parts: count,
                restored: Box::new(restored),
                from_index,
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        if !last.ok {
            return Ok(last);
        }
    }
    last.note = format!("{} (in {count} log entries)", last.note);
    Ok(last)
}
