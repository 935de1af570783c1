//! Agent tickets: how a client proves to an agent that the scheduler let
//! it run a command in, read the output of, or look at one allocation.
//!
//! An agent does not know users or their ACL tokens; the schedulers do.
//! So before `drover exec` or `drover logs` reaches an agent it asks a
//! scheduler for a ticket: the scheduler checks the caller's token for
//! that allocation's job and signs, with its own certificate's key, a
//! short statement — this action, on this allocation, on this node, for
//! this client, until this time. The agent checks the signature against
//! the certificate sent along, the certificate against the cluster CA (it
//! must be a scheduler's), and every field against the call; it accepts
//! nothing else. A ticket lives a minute: enough to start the call (a
//! followed log or an exec session then lasts as long as it lasts).
//!
//! Wire form: `DRVX1.<payload>.<signature>.<certificate>`, each part hex;
//! the payload is JSON, the signature ECDSA P-256 SHA-256 (ASN.1).

use super::{ca, Credential, Identity, PkiError};
use ring::signature::{self, EcdsaKeyPair};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// The metadata key a ticket travels in.
pub const METADATA: &str = "drover-ticket";
/// How long a ticket is valid.
pub const LIFETIME: Duration = Duration::from_secs(60);
const PREFIX: &str = "DRVX1";

/// What a ticket lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Exec,
    Logs,
    Usage,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "exec" => Some(Action::Exec),
            "logs" => Some(Action::Logs),
            "usage" => Some(Action::Usage),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Exec => "exec",
            Action::Logs => "logs",
            Action::Usage => "usage",
        })
    }
}

/// The statement a scheduler signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub action: Action,
    pub alloc: String,
    pub node: String,
    /// The client certificate's name it was issued to.
    pub holder: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: i64,
}

fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Ticket {
    /// A ticket for `action` on `alloc` (on `node`) for client `holder`,
    /// valid from `now` for [`LIFETIME`].
    pub fn new(action: Action, alloc: &str, node: &str, holder: &str, now: SystemTime) -> Ticket {
        Ticket {
            action,
            alloc: alloc.into(),
            node: node.into(),
            holder: holder.into(),
            expires_ms: now_ms(now + LIFETIME),
        }
    }

    /// Signs it with a scheduler's credential.
    pub fn sign(&self, scheduler: &Credential) -> Result<String, PkiError> {
        let pkcs8 = rcgen::KeyPair::from_pem(&scheduler.key_pem)
            .map_err(|e| PkiError::cert("ticket key", e))?
            .serialize_der();
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
                .map_err(|e| PkiError::cert("ticket key", e))?;
        let payload = serde_json::to_vec(self).expect("a ticket serializes");
        let sig = key
            .sign(&rng, &payload)
            .map_err(|e| PkiError::cert("ticket signature", e))?;
        Ok(format!(
            "{PREFIX}.{}.{}.{}",
            hex::encode(&payload),
            hex::encode(sig.as_ref()),
            hex::encode(ca::pem_to_der(&scheduler.cert_pem)?)
        ))
    }
}

/// Why a ticket is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("no ticket: ask a scheduler for one (`drover` does; an up-to-date CLI is needed)")]
    Missing,
    #[error("the ticket is malformed")]
    Malformed,
    #[error("the ticket's certificate is not a scheduler's of this cluster: {0}")]
    Signer(String),
    #[error("the ticket's signature is wrong")]
    Signature,
    #[error("the ticket expired")]
    Expired,
    #[error("the ticket is for {0}, not this call")]
    Mismatch(String),
}

/// Checks `ticket` (the wire form) for `action` on `alloc` on node `node`,
/// signed by a scheduler whose certificate chains to `ca_pem`, at `now`.
pub fn verify(
    ticket: Option<&str>,
    ca_pem: &str,
    action: Action,
    alloc: &str,
    node: &str,
    now: SystemTime,
) -> Result<Ticket, TicketError> {
    let t = ticket.ok_or(TicketError::Missing)?;
    let mut parts = t.trim().split('.');
    let (Some(PREFIX), Some(p), Some(s), Some(c), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TicketError::Malformed);
    };
    let (payload, sig, cert) = match (hex::decode(p), hex::decode(s), hex::decode(c)) {
        (Ok(p), Ok(s), Ok(c)) => (p, s, c),
        _ => return Err(TicketError::Malformed),
    };
    // The signer: a scheduler's certificate of this cluster's CA.
    let verifier =
        super::tls::scheduler_verifier(ca_pem).map_err(|e| TicketError::Signer(e.to_string()))?;
    let name = ServerName::try_from(super::SCHEDULER_NAME).expect("a valid DNS name");
    verifier
        .verify_server_cert(
            &CertificateDer::from(cert.as_slice()),
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
        )
        .map_err(|e| TicketError::Signer(e.to_string()))?;
    if !matches!(ca::identity_of(&cert), Some(Identity::Scheduler(_))) {
        return Err(TicketError::Signer("it names no scheduler".into()));
    }
    let (_, x509) =
        x509_parser::parse_x509_certificate(&cert).map_err(|_| TicketError::Malformed)?;
    let key = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        x509.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(&payload, &sig)
        .map_err(|_| TicketError::Signature)?;
    let ticket: Ticket = serde_json::from_slice(&payload).map_err(|_| TicketError::Malformed)?;
    if ticket.expires_ms <= now_ms(now) {
        return Err(TicketError::Expired);
    }
    if ticket.action != action || ticket.alloc != alloc || ticket.node != node {
        return Err(TicketError::Mismatch(format!(
            "{} on allocation {} on node {}",
            ticket.action, ticket.alloc, ticket.node
        )));
    }
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::Ca;

    #[test]
    fn a_ticket_signed_by_a_scheduler_opens_exactly_its_call() {
        let ca = Ca::generate("t").unwrap();
        let sched = ca
            .issue(&Identity::Scheduler(1), Duration::from_secs(600))
            .unwrap();
        let now = SystemTime::now();
        let t = Ticket::new(Action::Exec, "a1", "n1", "admin", now);
        let wire = t.sign(&sched).unwrap();
        let ok = |w: &str, action, alloc, node, at| {
            verify(Some(w), &ca.cert_pem, action, alloc, node, at)
        };
        assert_eq!(ok(&wire, Action::Exec, "a1", "n1", now).unwrap(), t);
        assert!(matches!(
            ok(&wire, Action::Logs, "a1", "n1", now),
            Err(TicketError::Mismatch(_))
        ));
        assert!(matches!(
            ok(&wire, Action::Exec, "a2", "n1", now),
            Err(TicketError::Mismatch(_))
        ));
        assert!(matches!(
            ok(&wire, Action::Exec, "a1", "n2", now),
            Err(TicketError::Mismatch(_))
        ));
        assert_eq!(
            ok(&wire, Action::Exec, "a1", "n1", now + LIFETIME),
            Err(TicketError::Expired)
        );
        assert_eq!(
            verify(None, &ca.cert_pem, Action::Exec, "a1", "n1", now),
            Err(TicketError::Missing)
        );
        // A changed payload breaks the signature.
        let mut forged = t.clone();
        forged.action = Action::Logs;
        let parts: Vec<&str> = wire.split('.').collect();
        let tampered = format!(
            "{}.{}.{}.{}",
            parts[0],
            hex::encode(serde_json::to_vec(&forged).unwrap()),
            parts[2],
            parts[3]
        );
        assert_eq!(
            ok(&tampered, Action::Logs, "a1", "n1", now),
            Err(TicketError::Signature)
        );
        // A node (or client) certificate cannot sign tickets.
        let node = ca
            .issue(&Identity::Node("n1".into()), Duration::from_secs(600))
            .unwrap();
        let by_node = t.sign(&node).unwrap();
        assert!(matches!(
            ok(&by_node, Action::Exec, "a1", "n1", now),
            Err(TicketError::Signer(_))
        ));
        // Nor can a scheduler of another cluster.
        let other = Ca::generate("o").unwrap();
        let theirs = other
            .issue(&Identity::Scheduler(1), Duration::from_secs(600))
            .unwrap();
        assert!(matches!(
            ok(&t.sign(&theirs).unwrap(), Action::Exec, "a1", "n1", now),
            Err(TicketError::Signer(_))
        ));
        assert_eq!(
            ok("DRVX1.zz", Action::Exec, "a1", "n1", now),
            Err(TicketError::Malformed)
        );
    }
}
