//! Drover's public-key infrastructure: one cluster certificate authority,
//! the certificates it signs, join tokens, and the TLS every connection of
//! the cluster runs over.
//!
//! Trust is by certificate, never by address (DESIGN.md, decision 9):
//!
//! - The **CA** ([`ca::Ca`]) is created once, when the cluster is
//!   bootstrapped, and its key lives only on scheduler replicas (mode 0600).
//! - Every certificate names **who** holds it ([`Identity`]) in a URI
//!   subject alternative name — `spiffe://drover/scheduler/1`,
//!   `spiffe://drover/node/node-1`, `spiffe://drover/client/admin` — and
//!   **what** it may serve as in a DNS name: a scheduler's certificate is
//!   valid for [`SCHEDULER_NAME`], a node's for [`AGENT_NAME`], a client's
//!   for neither. A node certificate therefore cannot pose as a scheduler.
//! - New agents and replicas join with a short-lived **join token**
//!   ([`token::JoinToken`]) that pins the CA's fingerprint (no trust on
//!   first use) and is signed with a key derived from the CA key, so any
//!   replica can check it and nothing needs to be stored.
//! - Certificates live a month and are **renewed** ([`renew`]) two thirds
//!   into their life by the process holding them.
//! - Agents serve exec, logs and usage only with a [`ticket`] a scheduler
//!   signed after checking the caller's ACL token.
//! - [`tls`] builds rustls configurations from all this and runs tonic
//!   over them: servers learn the verified [`Identity`] of each peer.

pub mod ca;
pub mod join;
pub mod renew;
pub mod ticket;
pub mod tls;
pub mod token;

use std::fmt;
use std::path::{Path, PathBuf};

/// The DNS name in every scheduler replica's certificate; clients verify
/// schedulers against it, whatever address they dialled.
pub const SCHEDULER_NAME: &str = "scheduler.drover";
/// The DNS name in every node agent's certificate.
pub const AGENT_NAME: &str = "agent.drover";
const URI_PREFIX: &str = "spiffe://drover/";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Cert { what: String, message: String },
    #[error("join token: {0}")]
    Token(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot join: {0}")]
    Join(String),
}

impl PkiError {
    fn cert(what: impl Into<String>, e: impl fmt::Display) -> PkiError {
        PkiError::Cert {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// Who holds a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A scheduler replica, by Raft id.
    Scheduler(u64),
    /// A node agent, by node name.
    Node(String),
    /// A user or tool of the client API.
    Client(String),
}

impl Identity {
    /// The URI subject alternative name that carries it.
    pub fn uri(&self) -> String {
        match self {
            Identity::Scheduler(id) => format!("{URI_PREFIX}scheduler/{id}"),
            Identity::Node(n) => format!("{URI_PREFIX}node/{n}"),
            Identity::Client(n) => format!("{URI_PREFIX}client/{n}"),
        }
    }

    /// Reads an identity back from a URI SAN; `None` if not one of ours.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (kind, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        match kind {
            "scheduler" => name.parse().ok().map(Identity::Scheduler),
            "node" => Some(Identity::Node(name.into())),
            "client" => Some(Identity::Client(name.into())),
            _ => None,
        }
    }

    /// The DNS name it may serve as (clients have none).
    pub fn server_name(&self) -> Option<&'static str> {
        match self {
            Identity::Scheduler(_) => Some(SCHEDULER_NAME),
            Identity::Node(_) => Some(AGENT_NAME),
            Identity::Client(_) => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Scheduler(id) => write!(f, "scheduler {id}"),
            Identity::Node(n) => write!(f, "node {n}"),
            Identity::Client(n) => write!(f, "client {n}"),
        }
    }
}

/// Writes `data` to `path` readable by its owner only (keys), atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_mode(path, data, 0o600)
}

/// Writes `data` to `path` (certificates: public), atomically.
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_mode(path, data, 0o644)
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("pki");
    // Unique per writer: two processes (a replica and a CLI sharing a
    // directory) may write the same file at once; the last rename wins.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Where a new version of `path` is written before it replaces it:
/// `dir/admin.pem` → `dir/admin.next.pem`.
fn staged(path: &Path) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.next.{ext}"),
        None => format!("{stem}.next"),
    };
    path.with_file_name(name)
}

/// Reads a file of key or certificate material.
pub fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").finish_non_exhaustive()
    }
}

impl Credential {
    /// `<dir>/<name>.pem` and `<dir>/<name>.key` (see [`Credential::load_files`]).
    pub fn load(dir: &Path, name: &str) -> Result<Credential, PkiError> {
        Credential::load_files(
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
    }

    /// Writes `<dir>/<name>.pem` and `<dir>/<name>.key` (see [`Credential::save_files`]).
    pub fn save(&self, dir: &Path, name: &str) -> Result<(), PkiError> {
        self.save_files(
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
    }

    /// The certificate at `cert` and the key at `key`. A pair that does not
    /// belong together (a crash in the middle of [`Credential::save_files`])
    /// is finished from the new certificate `save_files` left beside it.
    pub fn load_files(cert: &Path, key: &Path) -> Result<Credential, PkiError> {
        let c = Credential {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        if ca::pair_matches(&c.cert_pem, &c.key_pem) {
            return Ok(c);
        }
        let next = staged(cert);
        match read(&next) {
            Ok(cert_pem) if ca::pair_matches(&cert_pem, &c.key_pem) => {
                std::fs::rename(&next, cert).map_err(|source| PkiError::Io {
                    path: cert.to_path_buf(),
                    source,
                })?;
                Ok(Credential {
                    cert_pem,
                    key_pem: c.key_pem,
                })
            }
            _ => Err(PkiError::cert(
                cert.display().to_string(),
                format!("does not belong to the key in {}", key.display()),
            )),
        }
    }

    /// Writes the pair so that a crash at any point leaves one that loads:
    /// both new files are written aside first (`<stem>.next.<ext>`), then
    /// the key and then the certificate are renamed into place
    /// ([`Credential::load_files`] finishes a pair whose key moved and
    /// certificate did not).
    pub fn save_files(&self, cert: &Path, key: &Path) -> Result<(), PkiError> {
        let (next_cert, next_key) = (staged(cert), staged(key));
        write_private(&next_key, self.key_pem.as_bytes())?;
        write_public(&next_cert, self.cert_pem.as_bytes())?;
        for (from, to) in [(next_key, key), (next_cert, cert)] {
            std::fs::rename(&from, to).map_err(|source| PkiError::Io {
                path: to.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// Whom the certificate names.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        let der = ca::pem_to_der(&self.cert_pem)?;
        ca::identity_of(&der)
            .ok_or_else(|| PkiError::cert("certificate", "names no drover identity"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri_and_others_are_not_ours() {
        for id in [
            Identity::Scheduler(3),
            Identity::Node("node-1".into()),
            Identity::Client("admin".into()),
        ] {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        for bad in [
            "spiffe://drover/scheduler/x",
            "spiffe://drover/node/",
            "spiffe://drover/node/a/b",
            "spiffe://other/node/a",
            "https://drover/node/a",
            "spiffe://drover/root/a",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pair_torn_by_a_crash_loads_as_the_new_pair() {
        let d = tempfile::tempdir().unwrap();
        let ca = ca::Ca::generate("t").unwrap();
        let id = Identity::Node("n".into());
        let old = ca.issue(&id, std::time::Duration::from_secs(600)).unwrap();
        old.save(d.path(), "node").unwrap();
        let new = ca.issue(&id, std::time::Duration::from_secs(600)).unwrap();
        // The crash: the new key is in place, the new certificate beside it.
        write_public(&d.path().join("node.next.pem"), new.cert_pem.as_bytes()).unwrap();
        write_private(&d.path().join("node.key"), new.key_pem.as_bytes()).unwrap();
        let back = Credential::load(d.path(), "node").unwrap();
        assert_eq!(back.cert_pem, new.cert_pem);
        assert_eq!(read(&d.path().join("node.pem")).unwrap(), new.cert_pem);
        // Without the new certificate, the mismatch is an error that says so.
        write_private(&d.path().join("node.key"), old.key_pem.as_bytes()).unwrap();
        let e = Credential::load(d.path(), "node").unwrap_err().to_string();
        assert!(e.contains("does not belong to the key"), "{e}");
    }

    #[test]
    fn keys_are_written_for_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/ca.key");
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&p).unwrap(), "secret");
    }
}
