//! Drover's scheduler: the Raft-replicated desired state of a cluster.
//!
//! `state` is the deterministic state machine, `placement` and `reconcile`
//! the pure decisions, `raft` the durable replicated log under them,
//! `controller` the leader-only loops that turn decisions into commands,
//! `cluster` how peers form a group and follow its leader, and `server`
//! the gRPC services and process wiring.
#![forbid(unsafe_code)]

pub mod clock;
pub mod cluster;
pub mod controller;
pub mod pki;
pub mod placement;
pub mod raft;
pub mod reconcile;
pub mod secrets;
pub mod server;
pub mod state;

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go
/// unanswered before the connection is dropped: a peer or agent that
/// vanished without a TCP reset is noticed within twice this.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);
