//! Raft replication of the scheduler's state.
//!
//! Every change to the cluster's desired or observed state is a `Command`
//! appended to an openraft log, replicated to a quorum of scheduler
//! peers, and then applied, in log order, to each peer's `State`.
//! This module wires openraft's pieces together: the durable log
//! ([`log_store`]), the state machine and its snapshots ([`state_machine`]),
//! and the gRPC transport between peers ([`network`]). The rest of the
//! scheduler only calls [`open`], [`initialize`] or [`bootstrap_single`],
//! [`propose`] and [`ensure_linearizable`] (and [`add_voter`] /
//! [`remove_voter`] to change the peer set), and reads the shared state
//! (waking on the applied index) through a [`RaftHandle`].
//!
//! On disk a peer keeps `raft.redb` (log, vote, committed pointer) and
//! `snapshots/current.json` under its data directory, with a format marker
//! (`drover-format.json`, see `drover_proto::format`) that a release newer
//! than this one's layout makes this one refuse.

pub mod export;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod stats;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, QuorumNotEnough,
};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use tokio::sync::watch;

pub use self::log_store::{LogStore, LogStoreError};
pub use self::network::{LeaderContact, Network, RaftServer, TransportError};
pub use self::state_machine::{StateMachine, StateMachineError};
pub use self::types::{LogId, Node, NodeId, Raft, TypeConfig};
use crate::state::{Command, CommandResult, State};

/// What can go wrong running this peer's Raft.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    // openraft's errors are large; boxed so every `Result` here stays small.
    #[error("invalid raft configuration: {0}")]
    Config(Box<openraft::ConfigError>),
    #[error("raft stopped: {0}")]
    Fatal(Box<openraft::error::Fatal<NodeId>>),
    #[error("initializing the raft group: {0}")]
    Initialize(Box<InitializeError<NodeId, Node>>),
    /// Writes and linearizable reads must go to the leader; forward them to
    /// `leader_addr` if it is known.
    #[error("this peer is not the leader (leader: {})", describe_leader(*.leader_id, .leader_addr.as_deref()))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("leadership not confirmed by a quorum: {0}")]
    NoQuorum(Box<QuorumNotEnough<NodeId>>),
    #[error("membership change rejected: {0}")]
    Membership(Box<openraft::error::ChangeMembershipError<NodeId>>),
    #[error("preparing raft data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening raft storage: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("starting raft's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Format(#[from] drover_proto::format::FormatError),
}

/// What a scheduler's data directory is, for its format marker
/// (`drover_proto::format`).
pub const DATA_FORMAT: &str = "drover-scheduler-data";
/// The layout of the data directory this build reads and writes: the log
/// in `raft.redb` (entries as JSON), `snapshots/current.json`.
pub const DATA_VERSION: u32 = 1;

/// Who records the marker: this program and release.
pub fn program() -> String {
    format!("drover-scheduler {}", env!("CARGO_PKG_VERSION"))
}

fn describe_leader(id: Option<NodeId>, addr: Option<&str>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("{id} at {addr}"),
        (Some(id), None) => format!("{id}"),
        _ => "unknown".to_owned(),
    }
}

impl From<openraft::ConfigError> for Error {
    fn from(e: openraft::ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

impl From<openraft::error::Fatal<NodeId>> for Error {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        Error::Fatal(Box::new(e))
    }
}

impl From<ForwardToLeader<NodeId, Node>> for Error {
    fn from(f: ForwardToLeader<NodeId, Node>) -> Self {
        Error::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        }
    }
}

/// Tunables for a peer. The defaults suit a LAN: fast failover, a
/// snapshot every 1000 entries, and a short log tail kept after it.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// Name shared by all peers of one cluster.
    pub cluster_name: String,
    /// How often the leader heartbeats its followers.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time in this range stands
    /// for election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a follower that lags a
    /// little catches up from the log instead of a whole snapshot.
    pub keep_after_snapshot: u64,
    /// How this peer dials its peers (TLS with its certificate, in a
    /// secured cluster).
    pub tls: drover_proto::pki::tls::ClientTls,
    /// How many events (see `crate::events`) the peer keeps for subscribers.
    pub events_kept: usize,
    /// What the log, the network and the state machine measure.
    pub stats: stats::RaftStats,
}

impl Default for RaftOptions {
    fn default() -> Self {
        Self {
            cluster_name: "drover".to_owned(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_every: 1000,
            keep_after_snapshot: 100,
            tls: Default::default(),
            events_kept: crate::events::KEPT,
            stats: Default::default(),
        }
    }
}

impl RaftOptions {
    fn to_config(&self) -> Result<Config, Error> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            // Snapshot chunks travel as JSON, where bytes inflate about 3.5x:
            // keep a chunk well under the gRPC message limit and give it time.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 2000,
            ..Config::default()
        };
        Ok(config.validate()?)
    }
}

/// A running peer: the Raft node and the state it replicates.
#[derive(Clone)]
pub struct RaftHandle {
    /// This peer's id.
    pub id: NodeId,
    /// The openraft node; pass it to [`propose`] and friends.
    pub raft: Raft,
    /// The replicated state, as of `applied`. Read-lock it briefly; never hold
    /// the lock across an await.
    pub state: Arc<RwLock<State>>,
    /// The index of the last applied log entry; changes after every applied
    /// batch and snapshot install.
    pub applied: watch::Receiver<u64>,
    /// Where Raft's tasks run (see [`RaftRuntime`]).
    pub runtime: Arc<RaftRuntime>,
    /// What applied entries did, for subscribers (see `crate::events`).
    pub events: Arc<crate::events::EventHub>,
}

/// A runtime of its own for Raft: the core, replication to each peer, the
/// RPCs it sends, and the server of the RPCs peers send it.
///
/// On the API's runtime a heartbeat waited in line behind whatever else
/// was ready to run: when a burst of new replicas woke a thousand watch
/// streams at once, appends missed their deadline and followers stood for
/// election, and with ten thousand agents registering the cluster went
/// without a leader for seconds at a time. Here Raft has a thread of its
/// own, which the operating system runs as soon as it has work however
/// busy the other threads are.
pub struct RaftRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl RaftRuntime {
    fn start() -> Result<RaftRuntime, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("raft")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(RaftRuntime {
            runtime: Some(runtime),
        })
    }

    /// A handle to spawn on it.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // Dropped from async code as often as not: do not wait for it.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl RaftHandle {
    /// The gRPC service peers call to reach this peer's Raft.
    pub fn service(&self) -> drover_proto::pb::raft_service_server::RaftServiceServer<RaftServer> {
        RaftServer::new(self.raft.clone()).into_service()
    }

    /// Stop the Raft node and wait for its tasks to end.
    pub async fn shutdown(&self) -> Result<(), Error> {
        // A join error here means the core task panicked; nothing more to do.
        self.raft.shutdown().await?;
        Ok(())
    }
}

/// Open peer `id`'s storage under `dir` and start its Raft node.
///
/// The node starts from the last snapshot plus the log, re-applying entries
/// up to the saved committed index, so the state is back as it was before a
/// restart. A brand-new peer does nothing until it is initialized
/// ([`initialize`], [`bootstrap_single`]) or added by a leader.
pub async fn open(id: NodeId, dir: &Path, options: RaftOptions) -> Result<RaftHandle, Error> {
    let config = Arc::new(options.to_config()?);
    let dir = dir.to_owned();
    let state = Arc::new(RwLock::new(State::default()));
    let (applied_tx, applied) = watch::channel(0);
    let sm_state = state.clone();
    let stats = options.stats.clone();
    let events = crate::events::EventHub::new(options.events_kept).counting(stats.events.clone());
    let hub = events.clone();
    // Opening redb and reading the snapshot are blocking file I/O.
    let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Dir {
            path: dir.clone(),
            source,
        })?;
        // The log and the snapshots hold the cluster's secrets (a rotated
        // CA's key, ACL token hashes, jobs' environments): the owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| Error::Dir {
                    path: dir.clone(),
                    source,
                },
            )?;
        }
        // Before reading anything: a newer release's directory is refused.
        drover_proto::format::check_and_record(&dir, DATA_FORMAT, DATA_VERSION, &program())?;
        let log_store =
            LogStore::open(&dir.join("raft.redb"))?.observed(stats.fsync_seconds.clone());
        let sm = StateMachine::open(&dir.join("snapshots"), sm_state, applied_tx)?
            .with_events(hub)
            .observed(stats.snapshot_bytes.clone());
        Ok::<_, Error>((log_store, sm))
    })
    .await??;
    let network =
        Network::new(id, options.tls.clone()).observed(options.stats.append_seconds.clone());
    // Started there, Raft spawns every task of its own there.
    let runtime = Arc::new(RaftRuntime::start()?);
    let raft = runtime
        .handle()
        .spawn(Raft::new(id, config, network, log_store, state_machine))
        .await??;
    Ok(RaftHandle {
        id,
        raft,
        state,
        applied,
        runtime,
        events,
    })
}

/// Initialize a new cluster with `members` as its voters. Harmless on a
/// peer that is already initialized (for instance after a restart).
pub async fn initialize(raft: &Raft, members: BTreeMap<NodeId, Node>) -> Result<(), Error> {
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(openraft::error::RaftError::APIError(e)) => Err(Error::Initialize(Box::new(e))),
        Err(openraft::error::RaftError::Fatal(f)) => Err(f.into()),
    }
}

/// Initialize a one-peer cluster of peer `id`, reachable at `addr`.
pub async fn bootstrap_single(raft: &Raft, id: NodeId, addr: &str) -> Result<(), Error> {
    initialize(raft, BTreeMap::from([(id, Node::new(addr))])).await
}

/// Replicate `cmd` and apply it. Returns the log index it was committed at
/// and what applying it answered. Fails with [`Error::NotLeader`] (carrying
/// the leader's id and address when known) on a follower.
pub async fn propose(raft: &Raft, cmd: Command) -> Result<(u64, CommandResult), Error> {
    let resp = raft.client_write(cmd).await.map_err(write_error)?;
    Ok((resp.log_id.index, resp.data))
}

/// Add peer `id`, serving Raft at `addr`, as a voter: it joins as a
/// learner, catches up, and is then promoted. Leader only.
pub async fn add_voter(raft: &Raft, id: NodeId, addr: &str) -> Result<(), Error> {
    raft.add_learner(id, Node::new(addr), true)
        .await
        .map_err(write_error)?;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(write_error)?;
    Ok(())
}

/// Remove peer `id` from the cluster. Leader only.
pub async fn remove_voter(raft: &Raft, id: NodeId) -> Result<(), Error> {
    raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
        .await
        .map_err(write_error)?;
    Ok(())
}

/// A write's error in this module's terms (a follower's names the leader).
pub fn write_error(e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Error {
    match e {
        openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
        openraft::error::RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Membership(Box::new(e))
        }
        openraft::error::RaftError::Fatal(f) => f.into(),
    }
}

/// Confirm this peer is still the leader and wait until the state holds
/// everything committed before the call, so a read that follows is
/// linearizable. Returns the applied index the read will observe.
pub async fn ensure_linearizable(raft: &Raft) -> Result<u64, Error> {
    match raft.ensure_linearizable().await {
        Ok(read_log_id) => Ok(read_log_id.map_or(0, |l| l.index)),
        Err(e) => Err(leader_check_error(e)),
    }
}

/// A leadership check's error in this module's terms.
pub fn leader_check_error(
    e: openraft::error::RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>,
) -> Error {
    match e {
        openraft::error::RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => f.into(),
        openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            Error::NoQuorum(Box::new(q))
        }
        openraft::error::RaftError::Fatal(f) => f.into(),
    }
}
