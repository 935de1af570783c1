//! Raft replication of the scheduler's state (work in progress).

pub mod log_store;
pub mod types;
