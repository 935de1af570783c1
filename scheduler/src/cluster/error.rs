//! Why a peer could not carry out a write or a read: the scheduler core's
//! one error vocabulary for them. `server` turns these into gRPC statuses
//! (see `server::peer_error`); the core makes none (the answer of a call
//! forwarded to another peer, which is one, is kept whole).

/// Why a write, a read index or a forwarded call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Proposed, but not known to be committed in time.
    #[error("not committed within {secs}s (a majority may be unreachable); the write may still be applied, and retrying it is safe")]
    CommitTimeout { secs: u64 },
    #[error("this peer is shutting down")]
    ShuttingDown,
    /// Only the leader does this; `leader` is its address ("" while none is known).
    #[error("{}", not_leader(.leader))]
    NotLeader { leader: String },
    /// Leads, but no majority acknowledged it for `secs` (see `Peer::cut_off`).
    #[error("this peer leads but no majority of peers has acknowledged it for {secs}s: it may be cut off from its peers (try another peer); a write may still be applied, and retrying it is safe")]
    CutOff { secs: u64 },
    /// Raft refused or failed the call.
    #[error("raft: {0}")]
    Raft(String),
    /// A follower did not apply the leader's read index in time.
    #[error("this peer has not caught up with the leader's index {index}")]
    Behind { index: u64 },
    /// No leader answered within the patience of `forward::with_leader`.
    #[error("no leader reachable from this peer for {secs}s (is a majority of peers up and connected?): {why}")]
    NoLeader { secs: u64, why: String },
    #[error("the leader changed during the call")]
    LeaderChanged,
    /// What the peer a call was forwarded to answered (kept whole: its
    /// code and metadata are the caller's answer).
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    #[error("peer address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("the command is {bytes} bytes as JSON, more than one Raft log entry may hold ({max}): every entry must reach the other peers within the heartbeat interval")]
    TooLarge { bytes: usize, max: usize },
    #[error("encoding a command: {0}")]
    Encode(serde_json::Error),
    #[error("decoding a command result: {0}")]
    Decode(serde_json::Error),
    /// The command is newer than the cluster's version (a rolling upgrade
    /// is under way): see `crate::state::version`.
    #[error(transparent)]
    TooOld(#[from] crate::state::version::TooOld),
}

fn not_leader(leader: &str) -> String {
    if leader.is_empty() {
        "no leader elected yet".to_string()
    } else {
        format!("not the leader; the leader is {leader}")
    }
}

impl PeerError {
    /// Whether the same call may succeed against a (new) leader.
    pub fn retryable(&self) -> bool {
        match self {
            PeerError::CommitTimeout { .. }
            | PeerError::BadAddress { .. }
            | PeerError::Encode(_)
            | PeerError::Decode(_)
            | PeerError::TooOld(_)
            | PeerError::TooLarge { .. } => false,
            PeerError::Remote(s) => {
                matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
            }
            PeerError::ShuttingDown
            | PeerError::NotLeader { .. }
            | PeerError::CutOff { .. }
            | PeerError::Raft(_)
            | PeerError::Behind { .. }
            | PeerError::NoLeader { .. }
            | PeerError::LeaderChanged => true,
        }
    }
}

impl From<crate::raft::Error> for PeerError {
    fn from(e: crate::raft::Error) -> Self {
        match e {
            crate::raft::Error::NotLeader { leader_addr, .. } => PeerError::NotLeader {
                leader: leader_addr.unwrap_or_default(),
            },
            e => PeerError::Raft(e.to_string()),
        }
    }
}

impl From<tonic::Status> for PeerError {
    fn from(s: tonic::Status) -> Self {
        PeerError::Remote(s)
    }
}
