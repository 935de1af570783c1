//! Drover's scheduler: the Raft-replicated desired state of a cluster.
#![forbid(unsafe_code)]

pub mod placement;
pub mod reconcile;
pub mod state;
