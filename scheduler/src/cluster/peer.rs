//! A scheduler peer as the API and controllers see it: propose a command,
//! read the state (linearizable or stale), know whether it leads.
//!
//! On a follower, writes and linearizable reads are carried out with the
//! leader's help (see `crate::cluster`), unless the peer was made
//! [`Peer::leader_only`] for the controllers, which must never act from
//! a peer that no longer leads.

use super::PeerError;
use crate::cluster::batch::Batcher;
use crate::cluster::forward::{self, Forwarder};
use crate::raft::{self, LeaderContact, Raft};
use crate::state::{Command, CommandResult, State};
use drover_proto::pb;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long a write may wait to commit before the caller is told so.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a leader may go without its quorum lease before writes and
/// linearizable reads waiting on it are refused as cut off (a lapse under
/// load lasts well under this), and how recently a follower must have
/// heard from a leader to count as in touch.
pub const CUT_OFF: Duration = Duration::from_secs(1);

/// How long a peer has to answer what it says of itself.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
    pub raft: Raft,
    pub state: Arc<RwLock<State>>,
    pub applied: watch::Receiver<u64>,
    /// Channels to the other peers.
    pub forwarder: Arc<Forwarder>,
    /// What this peer last heard from a leader.
    pub contact: Arc<LeaderContact>,
    /// Whether a follower hands writes and reads to the leader (API
    /// handlers) or refuses them (controllers).
    pub follow_leader: bool,
    /// Batches concurrent proposals into one log entry.
    pub batcher: Batcher,
    /// Whether a majority acknowledged this peer as leader just now.
    pub lease: Arc<crate::cluster::lease::Lease>,
}

impl Peer {
    /// The same peer, refusing writes unless it leads (for controllers).
    pub fn leader_only(&self) -> Peer {
        Peer {
            follow_leader: false,
            ..self.clone()
        }
    }

    /// Proposes a command and waits until it is committed (and, on the
    /// leader, applied). A follower forwards it to the leader.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, PeerError> {
        // Here too, not only on the leader: a leader of an older release
        // could not even read it.
        self.gate(&cmd)?;
        if !self.follow_leader {
            return self.write_here(cmd).await.map(|(_, r)| r);
        }
        forward::with_leader(self, |leader| {
            let cmd = cmd.clone();
            async move {
                match leader {
                    None => self.write_here(cmd).await.map(|(_, r)| r),
                    Some(addr) => self.forwarder.command(&addr, &cmd).await,
                }
            }
        })
        .await
    }

    /// Proposes a command on this peer only; fails unless it leads.
    /// Returns the log index it committed at and what applying it answered.
    pub async fn write_here(&self, mut cmd: Command) -> Result<(u64, CommandResult), PeerError> {
        self.gate(&cmd)?;
        cmd.stamp(crate::clock::now_ms());
        // One entry too large to reach the followers within openraft's
        // deadline for an append would be sent again and again, and hold
        // up every entry after it: refused here, whoever proposes it.
        let bytes = super::batch::json_size(&cmd);
        let max = crate::raft::network::MAX_COMMAND_BYTES;
        if bytes > max {
            return Err(PeerError::TooLarge { bytes, max });
        }
        let proposed = tokio::select! {
            r = tokio::time::timeout(COMMIT_TIMEOUT, self.batcher.propose(cmd, bytes)) => r,
            s = self.cut_off() => return Err(s),
        };
        match proposed {
            Err(_) => Err(PeerError::CommitTimeout {
                secs: COMMIT_TIMEOUT.as_secs(),
            }),
            Ok(None) => Err(PeerError::ShuttingDown),
            Ok(Some(Ok(committed))) => Ok(committed),
            Ok(Some(Err(e))) => Err(raft::write_error(e).into()),
        }
    }

    /// Refuses a command the cluster's version does not have yet (see
    /// `crate::state::version`).
    fn gate(&self, cmd: &Command) -> Result<(), PeerError> {
        // Every cluster has version 1: no lock on the write path for that.
        if cmd.needs_version() <= crate::state::version::BASE {
            return Ok(());
        }
        Ok(crate::state::version::gate(cmd, self.cluster_version())?)
    }

    /// The version the cluster runs at, as this peer has applied it.
    pub fn cluster_version(&self) -> u32 {
        match self.state.read() {
            Ok(s) => s.cluster_version(),
            Err(p) => p.into_inner().cluster_version(),
        }
    }

    /// Confirms this peer leads and waits until it applied everything
    /// committed before the call; returns that index.
    pub async fn read_index_here(&self) -> Result<u64, PeerError> {
        let confirmed = tokio::select! {
            r = self.raft.ensure_linearizable() => r,
            s = self.cut_off() => return Err(s),
        };
        match confirmed {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(e) => Err(raft::leader_check_error(e).into()),
        }
    }

    /// Reads the state. Linearizable unless `stale`: the leader confirms it
    /// leads and this peer has applied everything committed before the
    /// read began (a follower asks the leader for that index, then waits).
    pub async fn read<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&State) -> T,
    ) -> Result<(T, pb::ReadInfo), PeerError> {
        if !stale {
            if !self.follow_leader {
                self.read_index_here().await?;
            } else {
                let index = forward::with_leader(self, |leader| async move {
                    match leader {
                        None => self.read_index_here().await,
                        Some(addr) => self.forwarder.read_index(&addr).await,
                    }
                })
                .await?;
                let mut applied = self.applied.clone();
                let caught_up =
                    tokio::time::timeout(forward::PATIENCE, applied.wait_for(|a| *a >= index))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if !caught_up {
                    return Err(PeerError::Behind { index });
                }
            }
        }
        let state = self.state.read().expect("state lock poisoned");
        let info = self.read_info(state.last_index, stale);
        Ok((f(&state), info))
    }

    /// Where a read at `applied` stands relative to the leader.
    fn read_info(&self, applied: u64, stale: bool) -> pb::ReadInfo {
        let (leader_index, leader_contact_ms) = if self.is_leader() {
            (applied, 0)
        } else {
            match self.contact.last() {
                Some((i, ago)) => (i, i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)),
                None => (0, -1),
            }
        };
        pb::ReadInfo {
            applied_index: applied,
            stale,
            served_by: self.addr.clone(),
            leader_index,
            leader_contact_ms,
            behind: leader_index.saturating_sub(applied),
        }
    }

    /// Resolves (with the error to answer) once this peer has led
    /// without its quorum lease for [`CUT_OFF`]: openraft would keep such a
    /// leader's writes waiting until their timeout, while a majority
    /// elsewhere may already serve. The caller moves on to another peer.
    async fn cut_off(&self) -> PeerError {
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.is_leader() || self.lease.held() {
                lost_since = None;
                continue;
            }
            let since = *lost_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= CUT_OFF {
                return PeerError::CutOff {
                    secs: CUT_OFF.as_secs(),
                };
            }
        }
    }

    /// What the peer at `addr` says of itself (`LocalStatus`), or `None`
    /// if it does not answer within [`STATUS_TIMEOUT`].
    pub async fn status_of(&self, addr: &str) -> Option<pb::MemberStatus> {
        let mut c = self.forwarder.cluster(addr).ok()?;
        let mut req = tonic::Request::new(pb::LocalStatusRequest {});
        req.set_timeout(STATUS_TIMEOUT);
        let answer = tokio::time::timeout(STATUS_TIMEOUT, c.local_status(req)).await;
        Some(answer.ok()?.ok()?.into_inner())
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state.is_leader()
    }

    /// Leads, and a majority acknowledged it within the lease: only then may
    /// it answer anything on its own authority (see `cluster::lease`).
    pub fn holds_lease(&self) -> bool {
        self.is_leader() && self.lease.held()
    }

    /// A leader holding its lease, or a follower that heard from a leader
    /// within `within`.
    pub fn in_touch(&self, within: Duration) -> bool {
        if self.is_leader() {
            return self.lease.held();
        }
        self.contact.last().is_some_and(|(_, ago)| ago < within)
    }

    pub fn metrics(&self) -> watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>> {
        self.raft.metrics()
    }

    /// A copy of the current state (for controllers; they must not hold the
    /// lock). Cheap: specs and the request table are shared, not copied.
    pub fn snapshot(&self) -> State {
        self.state.read().expect("state lock poisoned").clone()
    }
}
