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
pub mod events;
pub mod metrics;
pub mod pki;
pub mod placement;
pub mod raft;
pub mod reconcile;
pub mod secrets;
pub mod server;
pub mod state;
pub mod ui;

/// What a scheduler peer needs of its machine, checked before it starts
/// (and by `drover doctor`): room for the Raft log and snapshots in
/// `data_dir`, and a synchronised clock (certificates have validity
/// windows). Its port is checked by `drover doctor` only: binding it says
/// the same at start.
pub fn preflight(data_dir: &std::path::Path) -> drover_proto::preflight::Report {
    use drover_proto::preflight;
    let mut r = preflight::Report::default();
    r.push(preflight::disk(data_dir, "the scheduler's Raft log"));
    r.push(preflight::clock());
    r
}

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go
/// unanswered before the connection is dropped: a peer or agent that
/// vanished without a TCP reset is noticed within twice this.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);
