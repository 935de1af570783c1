//! What the leader knows of each node without the log: when it last heard
//! from it, and what its last heartbeat said (heartbeats are not commands;
//! only the transitions they cause are, see `node_transitions`).

use crate::state::{Node, NodeStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the leader last heard from each node, and what its last heartbeat
/// said of its container network.
#[derive(Clone, Default)]
pub struct Liveness {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    /// The `network_error` of each node's last heartbeat ("" when it works);
    /// the controller commits a change (`Command::SetNodeNetwork`).
    network: Arc<Mutex<HashMap<String, String>>>,
    /// What each node's last heartbeat said of the CAs it trusts and the
    /// one that signed its certificate (a CA rotation waits on them).
    trust: Arc<Mutex<HashMap<String, crate::state::ca::NodeTrust>>>,
}

impl Liveness {
    pub fn beat(&self, node: &str) {
        self.seen
            .lock()
            .expect("liveness lock")
            .insert(node.to_string(), Instant::now());
    }

    pub fn last_seen(&self, node: &str) -> Option<Instant> {
        self.seen.lock().expect("liveness lock").get(node).copied()
    }

    /// Records what a node's heartbeat said of its container network.
    pub fn network_reported(&self, node: &str, error: &str) {
        let mut network = self.network.lock().expect("liveness lock");
        if network.get(node).map(String::as_str) != Some(error) {
            network.insert(node.to_string(), error.to_string());
        }
    }

    /// What the node's last heartbeat (to this leader) said of its network.
    pub fn network(&self, node: &str) -> Option<String> {
        self.network
            .lock()
            .expect("liveness lock")
            .get(node)
            .cloned()
    }

    /// Records what a node's heartbeat said of its trust.
    pub fn trust_reported(&self, node: &str, trust: crate::state::ca::NodeTrust) {
        self.trust
            .lock()
            .expect("liveness lock")
            .insert(node.to_string(), trust);
    }

    /// What the node's last heartbeat (to this leader) said of its trust.
    pub fn trust(&self, node: &str) -> crate::state::ca::NodeTrust {
        self.trust
            .lock()
            .expect("liveness lock")
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    /// Forget everything (a new leader starts every node's clock afresh).
    pub fn reset(&self) {
        self.seen.lock().expect("liveness lock").clear();
        self.network.lock().expect("liveness lock").clear();
        self.trust.lock().expect("liveness lock").clear();
    }
}

/// The node status changes due now: a ready node not heard from for
/// `replace_after` goes down; a down node heard from again (by this leader,
/// since `leading_since`) is ready. A new leader counts every node's silence
/// from when it began to lead, so a failover never marks healthy nodes down.
pub fn node_transitions<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    last_seen: impl Fn(&str) -> Option<Instant>,
    leading_since: Instant,
    now: Instant,
    replace_after: Duration,
) -> Vec<(String, NodeStatus)> {
    let mut changes = Vec::new();
    for node in nodes {
        let seen = last_seen(&node.name);
        let last = seen.unwrap_or(leading_since).max(leading_since);
        let silent = now.saturating_duration_since(last) > replace_after;
        let status = match (node.status, silent, seen.is_some()) {
            (NodeStatus::Ready, true, _) => NodeStatus::Down,
            (NodeStatus::Down, false, true) => NodeStatus::Ready,
            _ => continue,
        };
        changes.push((node.name.clone(), status));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, status: NodeStatus) -> Node {
        Node {
            name: name.into(),
            address: String::new(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            status,
            schedulable: true,
            draining: false,
            subnet: String::new(),
            network_error: String::new(),
            volumes: Default::default(),
            disk_bytes: 0,
            labels: Default::default(),
            label_overrides: Default::default(),
            facts: Default::default(),
            registered_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    const AFTER: Duration = Duration::from_secs(6);

    fn transitions(
        nodes: &[Node],
        seen: &[(&str, u64)],
        leading_since: u64,
        now: u64,
    ) -> Vec<(String, NodeStatus)> {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let seen: HashMap<String, Instant> =
            seen.iter().map(|(n, s)| (n.to_string(), at(*s))).collect();
        node_transitions(
            nodes,
            |n| seen.get(n).copied(),
            at(leading_since),
            at(now),
            AFTER,
        )
    }

    #[test]
    fn a_ready_node_silent_for_longer_than_the_bound_goes_down() {
        let nodes = [node("a", NodeStatus::Ready), node("b", NodeStatus::Ready)];
        let seen = [("a", 10), ("b", 14)];
        assert_eq!(
            transitions(&nodes, &seen, 0, 17),
            [("a".to_string(), NodeStatus::Down)]
        );
        // Exactly at the bound is not yet longer than it.
        assert_eq!(transitions(&nodes, &seen, 0, 16), []);
    }

    #[test]
    fn a_new_leader_counts_silence_from_when_it_began_to_lead() {
        // Heard of by the old leader long ago, never by this one: its clock
        // starts with this leader's term, so a failover costs no node.
        let nodes = [node("a", NodeStatus::Ready)];
        assert_eq!(transitions(&nodes, &[], 100, 105), []);
        assert_eq!(
            transitions(&nodes, &[], 100, 107),
            [("a".to_string(), NodeStatus::Down)]
        );
        // A beat heard before this term counts from the term's start too.
        assert_eq!(transitions(&nodes, &[("a", 1)], 100, 105), []);
    }

    #[test]
    fn a_down_node_is_ready_again_only_once_this_leader_hears_from_it() {
        let nodes = [node("a", NodeStatus::Down), node("b", NodeStatus::Down)];
        assert_eq!(
            transitions(&nodes, &[("a", 50)], 0, 51),
            [("a".to_string(), NodeStatus::Ready)]
        );
        // Not heard from (b), or heard from too long ago: stays down.
        assert_eq!(transitions(&nodes, &[("a", 50)], 0, 57), []);
    }
}
