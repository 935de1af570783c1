//! Join tokens, after Swarm's: `DRV1-<role>-<expires>-<ca sha256>-<mac>`.
//!
//! - `role` is what the holder may become: `agent` or `scheduler`.
//! - `expires` is a Unix time in seconds: tokens are short-lived.
//! - the CA fingerprint lets the joiner check, before it sends anything,
//!   that it talks to this cluster (no trust on first use).
//! - the MAC (HMAC-SHA-256, truncated to 128 bits) is keyed with a secret
//!   derived from the CA key ([`super::ca::Ca::join_secret`]): any replica
//!   can check a token, nothing is stored, and rotating the CA voids every
//!   outstanding token.

use super::{ca::Ca, PkiError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a token lets its holder join as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Scheduler,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Scheduler => "scheduler",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "scheduler" => Some(Role::Scheduler),
            _ => None,
        }
    }
}

/// The default lifetime of a join token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const PREFIX: &str = "DRV1";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub role: Role,
    /// Unix seconds.
    pub expires: u64,
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    mac: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("role", &self.role)
            .field("expires", &self.expires)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8; 32], role: Role, expires: u64, fp: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(format!("{PREFIX}-{}-{expires}-{fp}", role.as_str()).as_bytes());
    m
}

impl JoinToken {
    /// A token for `role`, valid for `ttl` from now, signed by `ca`.
    pub fn create(ca: &Ca, role: Role, ttl: Duration) -> String {
        let expires = unix(SystemTime::now() + ttl);
        let fp = ca.fingerprint();
        let tag = mac(&ca.join_secret(), role, expires, &fp)
            .finalize()
            .into_bytes();
        format!(
            "{PREFIX}-{}-{expires}-{fp}-{}",
            role.as_str(),
            hex::encode(&tag[..16])
        )
    }

    /// Reads a token's parts (not whether it is valid: see [`Self::verify`]).
    pub fn parse(s: &str) -> Result<JoinToken, PkiError> {
        let bad = |why: &str| PkiError::Token(format!("not a drover join token ({why})"));
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, role, expires, fp, mac] = parts[..] else {
            return Err(bad("expected DRV1-ROLE-EXPIRES-FINGERPRINT-MAC"));
        };
        if prefix != PREFIX {
            return Err(bad("it does not start with DRV1"));
        }
        let role =
            Role::parse(role).ok_or_else(|| bad("the role is neither agent nor scheduler"))?;
        let expires = expires
            .parse()
            .map_err(|_| bad("the expiry is not a number"))?;
        let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(fp, 64) {
            return Err(bad("the CA fingerprint is not 64 hex digits"));
        }
        if !hex_of(mac, 32) {
            return Err(bad("the signature is not 32 hex digits"));
        }
        Ok(JoinToken {
            role,
            expires,
            ca_fingerprint: fp.to_ascii_lowercase(),
            mac: mac.to_ascii_lowercase(),
        })
    }

    /// Checks the token was made by `ca`'s cluster, for `role`, and has not
    /// expired at `now`. The error says which, never the secret.
    pub fn verify(&self, ca: &Ca, role: Role, now: SystemTime) -> Result<(), PkiError> {
        if self.ca_fingerprint != ca.fingerprint() {
            return Err(PkiError::Token(
                "it was made for another cluster (its CA fingerprint is not this cluster's)".into(),
            ));
        }
        let tag = hex::decode(&self.mac).map_err(|_| PkiError::Token("bad signature".into()))?;
        mac(
            &ca.join_secret(),
            self.role,
            self.expires,
            &self.ca_fingerprint,
        )
        .verify_truncated_left(&tag)
        .map_err(|_| PkiError::Token("its signature is wrong (forged or altered)".into()))?;
        if self.role != role {
            return Err(PkiError::Token(format!(
                "it lets its holder join as {}, not as {}",
                self.role.as_str(),
                role.as_str()
            )));
        }
        if unix(now) >= self.expires {
            return Err(PkiError::Token(format!(
                "it expired {} s ago; make a new one with `drover cluster join-token {}`",
                unix(now) - self.expires,
                role.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_role_until_it_expires() {
        let ca = Ca::generate("t").unwrap();
        let s = JoinToken::create(&ca, Role::Agent, Duration::from_secs(60));
        let t = JoinToken::parse(&s).unwrap();
        assert_eq!(t.ca_fingerprint, ca.fingerprint());
        let now = SystemTime::now();
        t.verify(&ca, Role::Agent, now).unwrap();
        let e = t.verify(&ca, Role::Scheduler, now).unwrap_err();
        assert!(e.to_string().contains("as agent, not as scheduler"), "{e}");
        let later = now + Duration::from_secs(120);
        let e = t.verify(&ca, Role::Agent, later).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused_without_showing_the_secret() {
        let ca = Ca::generate("t").unwrap();
        let s = JoinToken::create(&ca, Role::Agent, Duration::from_secs(60));
        // A longer life, or a promotion, breaks the signature.
        let parts: Vec<&str> = s.split('-').collect();
        let longer = format!("DRV1-agent-{}-{}-{}", u64::MAX / 2, parts[3], parts[4]);
        let promoted = s.replace("-agent-", "-scheduler-");
        for forged in [longer, promoted] {
            let e = JoinToken::parse(&forged)
                .unwrap()
                .verify(
                    &ca,
                    JoinToken::parse(&forged).unwrap().role,
                    SystemTime::now(),
                )
                .unwrap_err();
            assert!(e.to_string().contains("signature is wrong"), "{e}");
        }
        let other = Ca::generate("other").unwrap();
        let e = JoinToken::parse(&s)
            .unwrap()
            .verify(&other, Role::Agent, SystemTime::now())
            .unwrap_err();
        assert!(e.to_string().contains("another cluster"), "{e}");
        assert!(!e.to_string().contains(&hex::encode(ca.join_secret())));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (bad, why) in [
            ("", "expected DRV1"),
            ("SWMTKN-1-a-b-c", "does not start with DRV1"),
            ("DRV1-root-1-aa-bb", "neither agent nor scheduler"),
            ("DRV1-agent-x-aa-bb", "expiry is not a number"),
            ("DRV1-agent-1-aa-bb", "fingerprint is not 64"),
        ] {
            let e = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
