//! Drover's scheduler: the Raft-replicated desired state of a cluster.
#![forbid(unsafe_code)]

pub mod raft;
pub mod state;
