//! What a peer's Raft measures of itself, for `/metrics`: how long log
//! writes take to reach the disk (one fsync per batch), how long a
//! follower takes to answer an append, the last snapshot's size, and the
//! events applied entries made, by type.
//!
//! The log store, the network and the state machine each hold a clone;
//! the server registers them (see `crate::metrics`). Without a registry
//! they count for nobody, at the cost of an atomic add.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Labels as (name, value) pairs.
pub type Labels = Vec<(String, String)>;

/// 0.25 ms to about 8 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 16)
}

#[derive(Clone, Debug)]
pub struct RaftStats {
    /// One write of the log (entries, votes, truncations) and its fsync.
    pub fsync_seconds: Histogram,
    /// An append sent to a follower until its answer.
    pub append_seconds: Histogram,
    /// The size of the last snapshot taken or installed.
    pub snapshot_bytes: Gauge,
    /// Events applied entries made, by type.
    pub events: Family<Labels, Counter>,
}

impl Default for RaftStats {
    fn default() -> Self {
        RaftStats {
            fsync_seconds: Histogram::new(latency_buckets()),
            append_seconds: Histogram::new(latency_buckets()),
            snapshot_bytes: Gauge::default(),
            events: Family::default(),
        }
    }
}
