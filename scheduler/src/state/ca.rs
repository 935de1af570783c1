//! Replacing the cluster CA while the cluster runs (`drover cluster
//! rotate-ca`), without a moment where two parties do not trust each
//! other, so no connection fails and no container stops:
//!
//! | phase   | peers sign with | everyone trusts | advances when                                   |
//! |---------|--------------------|-----------------|-------------------------------------------------|
//! | `trust` | the old CA         | old and new     | every peer has it, every ready node trusts both |
//! | `sign`  | the new CA         | new and old     | every peer has it, every ready node's certificate is the new CA's |
//! | `done`  | the new CA         | the new         | —                                               |
//!
//! Replicas follow the phase as they apply it (`crate::pki::Pki::follow`):
//! in `sign` each signs itself a certificate from the new CA. Agents learn
//! from their heartbeats that the trusted set or the signing CA changed and
//! renew at once, getting both. The leader advances the phase when what
//! it hears says everyone caught up ([`CaRotation::may_advance`], pure).
//! A node that is down through the whole rotation misses it: its old
//! certificate is not trusted once the rotation is done, and it joins
//! again with a token.
//!
//! The new CA's key travels in the replicated log and snapshots, which live
//! only on scheduler peers, beside the CA key they hold anyway.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Trust,
    Sign,
    Done,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Trust => "trust",
            Phase::Sign => "sign",
            Phase::Done => "done",
        })
    }
}

/// A private key (PEM) in the state: never in debug output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(pub String);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<private key>")
    }
}

/// The latest CA rotation (kept once done, so a peer that was away
/// catches up with it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaRotation {
    pub phase: Phase,
    pub old_cert: String,
    pub new_cert: String,
    pub new_key: SecretPem,
    /// The new CA's subject: what a certificate it signed names as issuer.
    pub new_subject: String,
    /// The log index at which the phase began (every peer must have
    /// applied it before the next), and when.
    pub since_index: u64,
    pub since_ms: i64,
    /// The least each phase lasts, as asked (never under [`MIN_PHASE_MS`]).
    #[serde(default)]
    pub min_phase_ms: i64,
}

/// The shortest a phase lasts: long enough for a heartbeat of every node.
pub const MIN_PHASE_MS: i64 = 3_000;

/// What the leader knows of one ready node: the id of the CA set it
/// trusts and the issuer of its certificate (from its last heartbeat).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTrust {
    pub bundle_id: String,
    pub issuer: String,
}

impl CaRotation {
    /// The CA peers sign with in this phase, if not their old one.
    pub fn signing(&self) -> Option<(&str, &str)> {
        (self.phase >= Phase::Sign).then_some((&self.new_cert, &self.new_key.0))
    }

    /// The CA certificates trusted in this phase, the signing one first.
    pub fn bundle(&self) -> String {
        match self.phase {
            Phase::Trust => format!("{}{}", self.old_cert, self.new_cert),
            Phase::Sign => format!("{}{}", self.new_cert, self.old_cert),
            Phase::Done => self.new_cert.clone(),
        }
    }

    /// The phase after this one, if every peer applied this phase
    /// (`peers_at`: the log index each voter has, as the leader sees
    /// it), every ready node caught up (`nodes`), and the phase lasted
    /// [`MIN_PHASE_MS`]. Names what it waits for otherwise.
    pub fn may_advance(
        &self,
        now_ms: i64,
        peers_at: &[(u64, u64)],
        nodes: &[(String, NodeTrust)],
    ) -> Result<Phase, Vec<String>> {
        let next = match self.phase {
            Phase::Trust => Phase::Sign,
            Phase::Sign => Phase::Done,
            Phase::Done => return Err(vec![]),
        };
        let bundle = drover_proto::pki::ca::bundle_id(&self.bundle());
        let mut waiting = Vec::new();
        for (id, at) in peers_at {
            if *at < self.since_index {
                waiting.push(format!("peer {id}"));
            }
        }
        for (name, t) in nodes {
            let trusts = t.bundle_id == bundle;
            let signed = self.phase < Phase::Sign || t.issuer == self.new_subject;
            if !(trusts && signed) {
                waiting.push(format!("node {name}"));
            }
        }
        if waiting.is_empty() && now_ms - self.since_ms < self.min_phase_ms.max(MIN_PHASE_MS) {
            waiting.push("the phase's minimum time".into());
        }
        if waiting.is_empty() {
            Ok(next)
        } else {
            Err(waiting)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::pki::ca::{bundle_id, Ca};

    #[test]
    fn a_rotation_advances_only_when_every_peer_and_ready_node_caught_up() {
        let old = Ca::generate("old").unwrap();
        let new = Ca::generate("new").unwrap();
        let mut r = CaRotation {
            phase: Phase::Trust,
            old_cert: old.cert_pem.clone(),
            new_cert: new.cert_pem.clone(),
            new_key: SecretPem(new.key_pem().to_string()),
            new_subject: new.subject(),
            since_index: 10,
            since_ms: 0,
            min_phase_ms: 0,
        };
        assert_eq!(r.signing(), None);
        let both = bundle_id(&r.bundle());
        let trusting = NodeTrust {
            bundle_id: both.clone(),
            issuer: old.subject(),
        };
        let n = |t: &NodeTrust| vec![("n1".to_string(), t.clone())];
        // A peer behind, a node that does not trust both yet, too soon.
        assert_eq!(
            r.may_advance(5000, &[(1, 10), (2, 9)], &n(&trusting)),
            Err(vec!["peer 2".to_string()])
        );
        let stale = NodeTrust {
            bundle_id: bundle_id(&old.cert_pem),
            issuer: old.subject(),
        };
        assert_eq!(
            r.may_advance(5000, &[(1, 10)], &n(&stale)),
            Err(vec!["node n1".to_string()])
        );
        assert!(r.may_advance(100, &[(1, 10)], &n(&trusting)).is_err());
        assert_eq!(
            r.may_advance(5000, &[(1, 10)], &n(&trusting)),
            Ok(Phase::Sign)
        );

        // In `sign` the node must also hold a certificate of the new CA.
        r.phase = Phase::Sign;
        assert_eq!(r.signing().unwrap().0, new.cert_pem);
        assert_eq!(bundle_id(&r.bundle()), both, "still both, new first");
        assert_eq!(
            r.may_advance(5000, &[(1, 10)], &n(&trusting)),
            Err(vec!["node n1".to_string()])
        );
        let renewed = NodeTrust {
            bundle_id: both,
            issuer: new.subject(),
        };
        assert_eq!(
            r.may_advance(5000, &[(1, 10)], &n(&renewed)),
            Ok(Phase::Done)
        );
        r.phase = Phase::Done;
        assert_eq!(r.bundle(), new.cert_pem);
        assert!(r.may_advance(5000, &[], &[]).is_err());
    }
}
