//! The scheduler as a group of peers: who the members are, where the
//! leader is, and how a follower gets work done by it.
//!
//! A cluster forms from a list of initial members given to every peer
//! (`--peers 1=a,2=b,3=c`); initializing on every member, or again after a
//! restart, is harmless, because a peer that already has a log ignores it.
//! Clients and agents may talk to any peer: a follower forwards writes to
//! the leader as commands ([`forward`]), confirms linearizable reads with the
//! leader's read index before answering from its own state, and serves stale
//! reads alone, saying how far behind the leader it was last known to be.
//! While no leader is known (an election), a follower waits for one for a
//! bounded time instead of failing, so a user never sees "not leader".
//! On the leader, concurrent proposals are batched into one log entry
//! ([`batch`]).

pub mod batch;
pub mod error;
pub mod forward;
pub mod lease;
pub mod peer;

pub use error::PeerError;
pub use forward::Forwarder;
pub use peer::Peer;

use std::collections::BTreeMap;
use std::time::Duration;

/// What can be wrong with a cluster's configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("peer {entry:?}: {reason} (expected ID=HOST:PORT)")]
    BadPeer { entry: String, reason: String },
    #[error("peer id {0} is listed twice")]
    DuplicatePeer(u64),
    #[error("--id {0} is not one of --peers; to add a peer to a running cluster start it with --join and run `drover cluster add`")]
    NotAPeer(u64),
}

/// How a peer takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The initial voters by id and address; empty for a one-peer cluster.
    pub peers: BTreeMap<u64, String>,
    /// Start without initializing anything: wait to be added by a leader.
    pub join: bool,
    /// How often the leader heartbeats followers.
    pub heartbeat: Duration,
    /// A follower that hears no leader for between this and twice this
    /// stands for election.
    pub election_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: BTreeMap::new(),
            join: false,
            // openraft 0.9 lets a follower stand for election only after a
            // leader lease (the maximum election timeout) plus a random
            // election timeout without a heartbeat: 150ms gives a failover
            // of about half a second while a leader must still miss nine
            // heartbeats in a row before anyone stands.
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(150),
        }
    }
}

impl ClusterConfig {
    /// The initial members when this peer, `id`, should initialize the
    /// cluster; `None` when it must wait to be added.
    pub fn initial_members(
        &self,
        id: u64,
        advertise: &str,
    ) -> Result<Option<BTreeMap<u64, String>>, Error> {
        if self.join {
            return Ok(None);
        }
        if self.peers.is_empty() {
            return Ok(Some(BTreeMap::from([(id, advertise.to_string())])));
        }
        if !self.peers.contains_key(&id) {
            return Err(Error::NotAPeer(id));
        }
        Ok(Some(self.peers.clone()))
    }
}

/// Parses `1=10.0.0.1:7400,2=10.0.0.2:7400` into ids and addresses.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, Error> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| Error::BadPeer {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (id, addr) = entry.split_once('=').ok_or_else(|| bad("no '='"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        if id == 0 {
            return Err(bad("the id must not be 0"));
        }
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(bad("the address needs a host and a port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(Error::DuplicatePeer(id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let p = parse_peers("1=10.0.0.1:7400, 2=10.0.0.2:7400,3=h:1").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "10.0.0.2:7400");
        assert!(matches!(
            parse_peers("1=a:1,1=b:2"),
            Err(Error::DuplicatePeer(1))
        ));
        assert!(matches!(parse_peers("x=a:1"), Err(Error::BadPeer { .. })));
        assert!(matches!(parse_peers("0=a:1"), Err(Error::BadPeer { .. })));
        assert!(matches!(
            parse_peers("1=nohost"),
            Err(Error::BadPeer { .. })
        ));
        assert!(matches!(parse_peers("1:a:1"), Err(Error::BadPeer { .. })));
    }

    #[test]
    fn who_initializes() {
        let single = ClusterConfig::default();
        assert_eq!(
            single.initial_members(1, "a:1").unwrap(),
            Some(BTreeMap::from([(1, "a:1".to_string())]))
        );
        let three = ClusterConfig {
            peers: parse_peers("1=a:1,2=b:1,3=c:1").unwrap(),
            ..Default::default()
        };
        assert_eq!(three.initial_members(2, "b:1").unwrap().unwrap().len(), 3);
        assert_eq!(three.initial_members(4, "d:1"), Err(Error::NotAPeer(4)));
        let join = ClusterConfig {
            join: true,
            ..three
        };
        assert_eq!(join.initial_members(4, "d:1").unwrap(), None);
    }
}
