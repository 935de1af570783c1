//! The Raft type configuration: which Rust types openraft carries around.
//!
//! openraft is generic over the application data it replicates. Drover's log
//! entries carry a [`Command`](crate::state::Command), applying one yields a
//! [`CommandResult`](crate::state::CommandResult), peers are named by a `u64`
//! id and reached at the gRPC address stored in their [`BasicNode`], and a
//! snapshot travels as an in-memory byte buffer. Everything else in
//! `crate::raft` names these aliases instead of spelling the generics.

use std::io::Cursor;

use openraft::BasicNode;

use crate::state::{Command, CommandResult};

/// A peer's id within the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Drover's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft peer.
pub type Raft = openraft::Raft<TypeConfig>;
/// The position of an entry in the log: leader term, leader id and index.
pub type LogId = openraft::LogId<NodeId>;
/// One log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A vote (term plus the candidate voted for, and whether it is committed).
pub type Vote = openraft::Vote<NodeId>;
/// The membership configuration together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// Metadata that identifies a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
/// A snapshot: metadata plus its bytes.
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
/// openraft's storage error for our type configuration.
pub type StorageError = openraft::StorageError<NodeId>;
/// A peer's membership entry: its gRPC address.
pub use openraft::BasicNode as Node;
