//! Raft replication of the scheduler's state (work in progress).

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
