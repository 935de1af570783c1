//! The leader's quorum lease, and noticing that Raft itself has died.
//!
//! openraft 0.9 has no check-quorum: a leader cut off from its peers keeps
//! its role until it hears of a higher term. Anything it answers on its own
//! authority (an agent's heartbeat, a node's watch stream) would then keep a
//! node running replicas that the majority has already replaced elsewhere.
//! So the leader only acts while it holds a *lease*: a majority acknowledged
//! it within the maximum election timeout. Followers grant no vote for that
//! long after hearing from a leader, so no other leader can exist while the
//! lease is held (see `drover_proto::fencing`).
//!
//! The lease is computed from openraft's `millis_since_quorum_ack`, anchored
//! to the moment the metric was read: if metrics stop arriving, the lease
//! simply runs out.
//!
//! The same watcher notices when openraft's core has stopped (a storage
//! error is fatal to it): the peer must then stop serving rather than
//! answer from a state that will never move again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::raft::Raft;

/// The leader's quorum lease.
#[derive(Debug)]
pub struct Lease {
    length: Duration,
    /// When a majority last acknowledged this peer as leader.
    acked_at: Mutex<Option<Instant>>,
}

impl Lease {
    /// A lease of `length` (the maximum election timeout), tracked from
    /// `raft`'s metrics until they end. `fatal` is told why Raft stopped.
    pub fn track(
        raft: &Raft,
        length: Duration,
        fatal: watch::Sender<Option<String>>,
    ) -> Arc<Lease> {
        let lease = Arc::new(Lease {
            length,
            acked_at: Mutex::new(None),
        });
        let mut metrics = raft.metrics();
        let me = lease.clone();
        tokio::spawn(async move {
            loop {
                let ended = {
                    let m = metrics.borrow_and_update();
                    let at = m
                        .millis_since_quorum_ack
                        .filter(|_| m.state.is_leader())
                        .and_then(|ms| Instant::now().checked_sub(Duration::from_millis(ms)));
                    *me.acked_at.lock().expect("lease lock") = at;
                    m.running_state.as_ref().err().map(|e| e.to_string())
                };
                if let Some(why) = ended {
                    *me.acked_at.lock().expect("lease lock") = None;
                    let _ = fatal.send(Some(why));
                    return;
                }
                if metrics.changed().await.is_err() {
                    *me.acked_at.lock().expect("lease lock") = None;
                    // The core is gone; `shutdown` ends it the same way, and
                    // then nobody listens any more.
                    let _ = fatal.send(Some("raft core stopped".into()));
                    return;
                }
            }
        });
        lease
    }

    /// Whether a majority acknowledged this peer as leader within the lease.
    pub fn held(&self) -> bool {
        self.acked_at
            .lock()
            .expect("lease lock")
            .is_some_and(|t| t.elapsed() < self.length)
    }
}
