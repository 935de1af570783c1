//! This peer's keys and certificates, in `<pki-dir>` (default
//! `<data-dir>/pki`): the cluster CA (`ca.pem`, `ca.key`), this peer's
//! certificate (`scheduler.pem`, `scheduler.key`) and, where the CA was
//! made, the first administrator's (`admin.pem`, `admin.key`: what `drover`
//! uses until API tokens exist).
//!
//! A peer holds the CA key, so it renews its own certificate itself
//! ([`Pki::keep_renewed`]): two thirds into its life it signs a new one,
//! keeps it on disk and presents it from the next handshake on.
//!
//! The CA itself can be replaced while the cluster runs (`drover cluster
//! rotate-ca`; see `crate::state::ca`): the [`Authority`] — the CA this
//! peer signs with and the CA certificates it trusts — then changes
//! under the running process, as the replicated state says
//! ([`Pki::follow`]).

use drover_proto::pki::{
    ca::Ca,
    renew,
    tls::{LiveTls, TlsMaterial},
    Credential, Identity, PkiError,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use drover_proto::pki::ca::LEAF_VALIDITY;

/// The name of this peer's credential in the PKI dir.
pub const OWN: &str = "scheduler";
/// The name of the first administrator's credential.
pub const ADMIN: &str = "admin";

/// How long the first administrator's certificate is valid.
pub const ADMIN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The CA a peer signs with, and the CA certificates (`ca.pem`: during
/// a rotation, the old and the new) it trusts and hands out with every
/// certificate. Shared by everything that signs; replaced as a whole.
#[derive(Clone, Debug)]
pub struct Authority(Arc<RwLock<(Arc<Ca>, String)>>);

impl Authority {
    pub fn new(signing: Ca, bundle: String) -> Authority {
        Authority(Arc::new(RwLock::new((Arc::new(signing), bundle))))
    }

    /// The CA this peer signs with now.
    pub fn signing(&self) -> Arc<Ca> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Every CA certificate trusted now, PEM.
    pub fn bundle(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    fn replace(&self, signing: Ca, bundle: String) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(signing), bundle);
    }
}

/// The CA and this peer's TLS material.
#[derive(Clone, Debug)]
pub struct Pki {
    pub authority: Authority,
    pub tls: LiveTls,
    dir: PathBuf,
    id: u64,
    /// How long the certificates this peer signs (its own included) are valid.
    pub cert_ttl: Duration,
    /// Held while this peer's own files change (a renewal and a CA
    /// rotation must not interleave their writes).
    writing: Arc<std::sync::Mutex<()>>,
}

/// Whether a certificate is missing, not for `identity`, or past two thirds
/// of its life (then it is renewed).
fn needs_issue(dir: &Path, name: &str, identity: &Identity) -> bool {
    let Ok(c) = Credential::load(dir, name) else {
        return true;
    };
    if c.identity().ok().as_ref() != Some(identity) {
        return true;
    }
    renew::due(&c.cert_pem).is_none_or(|at| at <= SystemTime::now())
}

/// Whether the certificate `name` in `dir` was signed by `ca`.
fn signed_by(dir: &Path, name: &str, ca: &Ca) -> bool {
    Credential::load(dir, name)
        .ok()
        .and_then(|c| drover_proto::pki::ca::issuer(&c.cert_pem))
        .is_some_and(|i| i == ca.subject())
}

impl Pki {
    /// The PKI in `dir` for peer `id`. Without a CA there, one is made
    /// if `bootstrap` (this peer starts a new cluster), with an admin
    /// credential beside it; otherwise it is an error saying how to get one.
    pub fn open(dir: &Path, id: u64, bootstrap: bool) -> Result<Pki, PkiError> {
        Pki::open_for(dir, id, bootstrap, LEAF_VALIDITY)
    }

    /// Like [`Pki::open`], signing certificates valid for `cert_ttl`.
    pub fn open_for(
        dir: &Path,
        id: u64,
        bootstrap: bool,
        cert_ttl: Duration,
    ) -> Result<Pki, PkiError> {
        if !Ca::exists(dir) {
            if !bootstrap {
                return Err(PkiError::Cert {
                    what: format!("{}", dir.display()),
                    message: "no cluster CA here: give every initial peer a copy of one \
                              (`drover-scheduler ca init --pki-dir DIR`), or join with \
                              --join-token"
                        .into(),
                });
            }
            init(dir)?;
        }
        let ca = Ca::load(dir)?;
        let bundle = drover_proto::pki::read(&dir.join("ca.pem"))?;
        let identity = Identity::Scheduler(id);
        if needs_issue(dir, OWN, &identity) || !signed_by(dir, OWN, &ca) {
            ca.issue(&identity, cert_ttl)?.save(dir, OWN)?;
        }
        Ok(Pki {
            tls: LiveTls::new(TlsMaterial::load(dir, OWN)?)?,
            authority: Authority::new(ca, bundle),
            dir: dir.to_path_buf(),
            id,
            cert_ttl,
            writing: Default::default(),
        })
    }

    /// Makes this peer's CA files, signing CA, trust and own certificate
    /// what the cluster's CA rotation (if any) says they are now: the
    /// rotation's new CA signs from its `sign` phase on, and the trusted
    /// set is the old and the new until it is done. Idempotent; returns
    /// whether anything changed. Files are written before anything is
    /// used, and `Ca::load` finds the signing certificate by its key, so a
    /// crash part way leaves a directory that loads (and the next call
    /// finishes the job).
    pub fn follow(&self, rotation: &crate::state::ca::CaRotation) -> Result<bool, PkiError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.authority.signing();
        let (signing, bundle) = match rotation.signing() {
            Some((cert, key)) => (
                Ca::from_pem(cert.to_string(), key.to_string())?,
                rotation.bundle(),
            ),
            None => (Ca::clone_of(&current)?, rotation.bundle()),
        };
        let same_signer = signing.fingerprint() == current.fingerprint();
        let same_bundle = drover_proto::pki::ca::bundle_id(&bundle)
            == drover_proto::pki::ca::bundle_id(&self.authority.bundle());
        let own_ok = signed_by(&self.dir, OWN, &signing);
        if same_signer && same_bundle && own_ok {
            return Ok(false);
        }
        drover_proto::pki::write_public(&self.dir.join("ca.pem"), bundle.as_bytes())?;
        drover_proto::pki::write_private(&self.dir.join("ca.key"), signing.key_pem().as_bytes())?;
        if !own_ok {
            signing
                .issue(&Identity::Scheduler(self.id), self.cert_ttl)?
                .save(&self.dir, OWN)?;
        }
        self.authority.replace(signing, bundle);
        self.tls.replace(TlsMaterial::load(&self.dir, OWN)?)?;
        tracing::info!(
            phase = %rotation.phase,
            "CA rotation: this peer's trust and certificate follow"
        );
        Ok(true)
    }

    /// Where this peer's keys and certificates are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs a new certificate for this peer, keeps it, and presents it
    /// from the next handshake on.
    pub fn renew_own(&self) -> Result<(), PkiError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let cred = self
            .authority
            .signing()
            .issue(&Identity::Scheduler(self.id), self.cert_ttl)?;
        cred.save(&self.dir, OWN)?;
        self.tls.replace(TlsMaterial::load(&self.dir, OWN)?)
    }

    /// Renews this peer's certificate each time it is due, until `stop`.
    pub async fn keep_renewed(self, mut stop: tokio::sync::broadcast::Receiver<()>) {
        loop {
            let cert = self.tls.material().credential.cert_pem;
            let wait = renew::wait(&cert, SystemTime::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.recv() => return,
            }
            if renew::due(&cert).is_some_and(|at| at > SystemTime::now()) {
                continue; // woke early (the wait is capped): not due yet
            }
            match self.renew_own() {
                Ok(()) => tracing::info!(id = self.id, "renewed this peer's certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this peer's certificate; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(renew::retry_wait(&cert, SystemTime::now())) => {}
                        _ = stop.recv() => return,
                    }
                }
            }
        }
    }

    /// The PKI in `dir` for peer `id` of the cluster whose CA is `ca`
    /// (copied into `dir`): how one machine runs several peers.
    pub fn open_with_ca(ca: &Ca, dir: &Path, id: u64) -> Result<Pki, PkiError> {
        if !Ca::exists(dir) {
            ca.save(dir)?;
        }
        Pki::open(dir, id, false)
    }

    /// Joins the cluster through the peer at `addr` with a scheduler
    /// join token, and keeps what it gets in `dir` (CA key included).
    pub async fn join(
        dir: &Path,
        id: u64,
        addr: &str,
        token: &str,
        cert_ttl: Duration,
    ) -> Result<Pki, PkiError> {
        let j = drover_proto::pki::join::join(addr, token, "", id).await?;
        let key = j.ca_key_pem.ok_or_else(|| {
            PkiError::Token("a scheduler peer needs a scheduler join token".into())
        })?;
        // During a rotation the CA certificates come as a bundle: the key
        // finds its own among them.
        drover_proto::pki::write_public(&dir.join("ca.pem"), j.ca_pem.as_bytes())?;
        drover_proto::pki::write_private(&dir.join("ca.key"), key.as_bytes())?;
        if let Some(k) = &j.secrets_key {
            drover_proto::pki::write_private(&dir.join(crate::secrets::KEY_FILE), k.as_bytes())?;
        }
        Ca::load(dir)?;
        j.credential.save(dir, OWN)?;
        Pki::open_for(dir, id, false, cert_ttl)
    }
}

/// Makes a new cluster CA in `dir`, and the first administrator's
/// credential. Refuses to replace a CA that is there.
pub fn init(dir: &Path) -> Result<Ca, PkiError> {
    if Ca::exists(dir) {
        return Err(PkiError::Cert {
            what: format!("{}", dir.display()),
            message: "a cluster CA is already there".into(),
        });
    }
    let ca = Ca::generate("cluster")?;
    // The administrator's credential first, the CA (its key last) after:
    // a crash part way leaves no CA, and the next init starts over.
    ca.issue(&Identity::Client(ADMIN.into()), ADMIN_VALIDITY)?
        .save(dir, ADMIN)?;
    // The key secrets are sealed with: copied with the CA to every peer.
    crate::secrets::SecretKey::random()
        .map_err(|_| PkiError::Cert {
            what: dir.display().to_string(),
            message: "no randomness for the secrets key".into(),
        })?
        .save(dir)
        .map_err(|e| PkiError::Cert {
            what: dir.display().to_string(),
            message: e.to_string(),
        })?;
    ca.save(dir)?;
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash while the CA is first written (its certificate there, its key
    /// not yet) leaves a directory the next start makes a CA in, rather than
    /// one that fails to load for ever.
    #[test]
    fn a_crash_while_the_ca_is_first_written_leaves_a_fresh_start() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pki");
        let ca = Ca::generate("cluster").unwrap();
        drover_proto::pki::write_public(&dir.join("ca.pem"), ca.cert_pem.as_bytes()).unwrap();
        assert!(!Ca::exists(&dir));
        let pki = Pki::open(&dir, 1, true).expect("a fresh CA over the half-written one");
        assert_ne!(pki.authority.signing().fingerprint(), ca.fingerprint());
        // And it loads again after a restart, with the admin credential made.
        Pki::open(&dir, 1, false).unwrap();
        assert!(dir.join("admin.pem").exists() && dir.join("admin.key").exists());
    }
}
