//! Secrets at rest: what `drover secret create` stores is sealed
//! (ChaCha20-Poly1305) with a key every scheduler peer holds, so the Raft
//! log, its snapshots and every copy of them hold ciphertext only. A peer
//! unseals a secret only to hand it to a node that runs a replica using it
//! (see `server::node_api`).
//!
//! The key is `secrets.key` in the peer's PKI directory (beside `ca.key`,
//! 64 hex digits). A peer without one derives it from the cluster CA's key
//! (HMAC-SHA256), so every peer given the same CA key has the same secrets
//! key; peers that join get it with their CA key. Without TLS
//! (`--insecure-plaintext`) it is made at random in the data directory: a
//! one-peer cluster for debugging.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// The key's file name, in the PKI (or data) directory.
pub const KEY_FILE: &str = "secrets.key";
/// The largest secret or config, in bytes.
pub const MAX_SIZE: usize = 256 << 10;

/// The peers' key for secrets at rest.
pub struct SecretKey {
    raw: [u8; 32],
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why a sealed secret cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed with another key than this peer's (copy {KEY_FILE} from a peer that has the cluster's)")]
    WrongKey,
    #[error("{path}: {message}")]
    Key { path: String, message: String },
}

impl SecretKey {
    pub fn from_raw(raw: [u8; 32]) -> SecretKey {
        let key =
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &raw).expect("a 32-byte key"));
        SecretKey { raw, key }
    }

    /// The key in `dir/secrets.key`, made first if it is not there:
    /// derived from `dir/ca.key` when there is one, else at random.
    pub fn load_or_make(dir: &Path) -> Result<SecretKey, SealError> {
        let path = dir.join(KEY_FILE);
        let err = |message: String| SealError::Key {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| err(e.to_string()))?;
                let raw: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| err("not a 32-byte key in hex".into()))?;
                return Ok(SecretKey::from_raw(raw));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        let raw = match std::fs::read(dir.join("ca.key")) {
            Ok(ca_key) => derive(&ca_key),
            Err(_) => {
                let mut raw = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut raw)
                    .map_err(|_| err("no randomness".into()))?;
                raw
            }
        };
        let key = SecretKey::from_raw(raw);
        key.save(dir)?;
        Ok(key)
    }

    /// Writes the key to `dir/secrets.key`, readable by root only.
    pub fn save(&self, dir: &Path) -> Result<(), SealError> {
        let path = dir.join(KEY_FILE);
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                drover_proto::pki::write_private(&path, self.hex().as_bytes())
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .map_err(|e| SealError::Key {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }

    /// The key in hex, for a joining peer.
    pub fn hex(&self) -> String {
        hex::encode(self.raw)
    }

    /// `plain` sealed for the secret `name`: a random nonce, then the
    /// ciphertext and its tag. The name is bound in: a sealed value moved
    /// to another name does not open.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's randomness");
        let mut out = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut out,
            )
            .expect("sealing cannot fail for sizes this small");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        sealed
    }

    /// What `seal` sealed for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::WrongKey);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::WrongKey)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(name)), &mut buf)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

fn aad(name: &str) -> Vec<u8> {
    format!("drover secret {name}").into_bytes()
}

/// The secrets key of a cluster whose CA key is `ca_key` (its PEM).
fn derive(ca_key: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ca_key);
    let tag = ring::hmac::sign(&k, b"drover secrets key v1");
    tag.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_the_name() {
        let key = SecretKey::from_raw([7; 32]);
        let sealed = key.seal("db", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("db", &sealed).unwrap(), b"hunter2");
        assert!(key.open("other", &sealed).is_err());
        assert!(SecretKey::from_raw([8; 32]).open("db", &sealed).is_err());
        // Two seals of the same value differ (a fresh nonce each).
        assert_ne!(key.seal("db", b"hunter2"), sealed);
        assert!(key.open("db", &sealed[..5]).is_err());
    }

    #[test]
    fn peers_with_the_same_ca_key_derive_the_same_key_and_keep_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [&a, &b] {
            std::fs::write(d.path().join("ca.key"), "-----BEGIN PRIVATE KEY-----\nx\n").unwrap();
        }
        let ka = SecretKey::load_or_make(a.path()).unwrap();
        let kb = SecretKey::load_or_make(b.path()).unwrap();
        assert_eq!(ka.hex(), kb.hex());
        // Kept: a later CA key (a rotation) does not change it.
        std::fs::write(a.path().join("ca.key"), "another").unwrap();
        assert_eq!(SecretKey::load_or_make(a.path()).unwrap().hex(), ka.hex());
        // Without a CA key: random, and kept.
        let c = tempfile::tempdir().unwrap();
        let kc = SecretKey::load_or_make(c.path()).unwrap();
        assert_ne!(kc.hex(), ka.hex());
        assert_eq!(SecretKey::load_or_make(c.path()).unwrap().hex(), kc.hex());
    }
}
