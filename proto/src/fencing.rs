//! Fencing: why a replica never runs on two nodes at once.
//!
//! A node that goes silent may be dead, or alive behind a partition. The
//! scheduler cannot tell which, so it may only start a silent node's replicas
//! elsewhere once that node has *certainly* stopped them. The agent and the
//! leader agree on one number, the node timeout `T`, and the rest follows:
//!
//! - The agent remembers the moment `a` at which it **sent** the last
//!   heartbeat that a leader acknowledged. At `a + T` it stops every replica
//!   (except jobs that opt out with `on_disconnect: keep-running`), giving
//!   each at most [`FENCE_STOP_GRACE`] before SIGKILL. So by
//!   `a + T + FENCE_STOP_GRACE + FENCE_CHECK` nothing of it runs.
//! - The leader stamps a heartbeat `s` when it receives it, which is after it
//!   was sent: `s ≥ a`. It acknowledges heartbeats only while it holds a
//!   quorum lease (a majority acknowledged it within the election timeout),
//!   so a deposed leader cannot keep an agent believing in it.
//! - The leader marks the node down and replaces its replicas at
//!   `s + replace_after(T)` = `s + T + FENCE_STOP_GRACE + FENCE_MARGIN`,
//!   which is `≥ a + T + FENCE_STOP_GRACE + FENCE_MARGIN`: after the agent
//!   stopped them, as long as `FENCE_MARGIN` covers the agent's check
//!   interval and clock-rate differences over `T` (monotonic clocks).
//! - A new leader knows no heartbeat times; it counts every node from the
//!   moment it was elected, which is after the old leader's lease ended, so
//!   the same inequality holds.
//!
//! The agent learns `T` from the scheduler in every heartbeat answer, so the
//! two cannot be configured apart.

use std::time::Duration;

/// The longest a fenced agent lets a replica take to stop before SIGKILL.
pub const FENCE_STOP_GRACE: Duration = Duration::from_secs(2);

/// How often an agent checks whether it must fence itself.
pub const FENCE_CHECK: Duration = Duration::from_millis(250);

/// Slack for the agent's check interval, scheduling delays and clock rates.
pub const FENCE_MARGIN: Duration = Duration::from_secs(1);

/// The node timeout when none is configured.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long after the last heartbeat the leader received it may replace a
/// silent node's replicas, for node timeout `t`.
pub fn replace_after(t: Duration) -> Duration {
    t + FENCE_STOP_GRACE + FENCE_MARGIN
}

/// Whether an agent whose last acknowledged heartbeat was sent `since_ack`
/// ago must have stopped its replicas, for node timeout `t`.
pub fn must_fence(since_ack: Duration, t: Duration) -> bool {
    since_ack >= t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fencing inequality, for every timeout and every delay between the
    /// agent sending a heartbeat and the leader receiving it.
    #[test]
    fn the_agent_has_stopped_before_the_leader_replaces() {
        for t_ms in [500u64, 1_000, 4_000, 30_000] {
            let t = Duration::from_millis(t_ms);
            for delay_ms in [0u64, 1, 100, 999, 5_000] {
                let sent = Duration::ZERO;
                let received = sent + Duration::from_millis(delay_ms);
                let agent_dead_by = sent + t + FENCE_STOP_GRACE + FENCE_CHECK;
                let leader_replaces = received + replace_after(t);
                assert!(
                    leader_replaces > agent_dead_by,
                    "t={t_ms}ms delay={delay_ms}ms"
                );
            }
            assert!(!must_fence(t - Duration::from_millis(1), t));
            assert!(must_fence(t, t));
        }
    }
}
