//! Secrets at rest: what `drover secret create` stores is sealed
//! (ChaCha20-Poly1305) with a key every scheduler peer holds, so the Raft
//! log, its snapshots and every copy of them hold ciphertext only. A peer
//! unseals a secret only to hand it to a node that runs a replica using it
//! (see `server::node_api`).
//!
//! The key is `secrets.key` in the peer's PKI directory (beside `ca.key`,
//! 64 random hex digits), made with the CA (`drover-scheduler ca init`, or
//! the first peer's bootstrap) and copied with it to the initial peers;
//! peers that join with a token receive it. It is never derived from
//! anything in the replicated state. The state keeps the key's id (a hash):
//! a peer whose key is not the cluster's is refused when it seals, and says
//! so when it cannot unseal. Without TLS (`--insecure-plaintext`) it is in
//! the data directory.

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

    /// The key in `dir/secrets.key`, made at random first if it is not
    /// there (a peer set up without it then holds a key of its own, which
    /// the cluster's key id tells apart).
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
        let key = SecretKey::random().map_err(|_| err("no randomness".into()))?;
        key.save(dir)?;
        tracing::info!(path = %path.display(), id = %key.id(), "made a new secrets key: every scheduler peer needs this same file");
        Ok(key)
    }

    /// A new random key.
    pub fn random() -> Result<SecretKey, ring::error::Unspecified> {
        let mut raw = [0u8; 32];
        SystemRandom::new().fill(&mut raw)?;
        Ok(SecretKey::from_raw(raw))
    }

    /// What tells keys apart without showing them: the first 16 hex
    /// digits of the key's SHA-256.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.raw))[..16].to_string()
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
    fn a_key_is_random_kept_and_not_derived_from_the_ca_key() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [&a, &b] {
            std::fs::write(d.path().join("ca.key"), "-----BEGIN PRIVATE KEY-----\nx\n").unwrap();
        }
        let ka = SecretKey::load_or_make(a.path()).unwrap();
        let kb = SecretKey::load_or_make(b.path()).unwrap();
        assert_ne!(ka.hex(), kb.hex());
        assert_ne!(ka.id(), kb.id());
        assert_eq!(SecretKey::load_or_make(a.path()).unwrap().hex(), ka.hex());
        assert_eq!(SecretKey::load_or_make(a.path()).unwrap().id(), ka.id());
        assert!(!ka.hex().contains(&ka.id()));
    }
}
