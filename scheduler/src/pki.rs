//! This replica's keys and certificates, in `<pki-dir>` (default
//! `<data-dir>/pki`): the cluster CA (`ca.pem`, `ca.key`), this replica's
//! certificate (`scheduler.pem`, `scheduler.key`) and, where the CA was
//! made, the first administrator's (`admin.pem`, `admin.key`: what `drover`
//! uses until API tokens exist).
//!
//! A replica holds the CA key, so it renews its own certificate itself
//! ([`Pki::keep_renewed`]): two thirds into its life it signs a new one,
//! keeps it on disk and presents it from the next handshake on.

use drover_proto::pki::{
    ca::Ca,
    renew,
    tls::{LiveTls, TlsMaterial},
    Credential, Identity, PkiError,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use drover_proto::pki::ca::LEAF_VALIDITY;

/// The name of this replica's credential in the PKI dir.
pub const OWN: &str = "scheduler";
/// The name of the first administrator's credential.
pub const ADMIN: &str = "admin";

/// How long the first administrator's certificate is valid.
pub const ADMIN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The CA and this replica's TLS material.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca: Arc<Ca>,
    pub tls: LiveTls,
    dir: PathBuf,
    id: u64,
    /// How long the certificates this replica signs (its own included) are valid.
    pub cert_ttl: Duration,
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

impl Pki {
    /// The PKI in `dir` for replica `id`. Without a CA there, one is made
    /// if `bootstrap` (this replica starts a new cluster), with an admin
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
                    message: "no cluster CA here: give every initial replica a copy of one \
                              (`drover-scheduler ca init --pki-dir DIR`), or join with \
                              --join-token"
                        .into(),
                });
            }
            init(dir)?;
        }
        let ca = Ca::load(dir)?;
        let identity = Identity::Scheduler(id);
        if needs_issue(dir, OWN, &identity) {
            ca.issue(&identity, cert_ttl)?.save(dir, OWN)?;
        }
        Ok(Pki {
            tls: LiveTls::new(TlsMaterial::load(dir, OWN)?)?,
            ca: Arc::new(ca),
            dir: dir.to_path_buf(),
            id,
            cert_ttl,
        })
    }

    /// Signs a new certificate for this replica, keeps it, and presents it
    /// from the next handshake on.
    pub fn renew_own(&self) -> Result<(), PkiError> {
        let cred = self
            .ca
            .issue(&Identity::Scheduler(self.id), self.cert_ttl)?;
        cred.save(&self.dir, OWN)?;
        self.tls.replace(TlsMaterial::load(&self.dir, OWN)?)
    }

    /// Renews this replica's certificate each time it is due, until `stop`.
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
                Ok(()) => tracing::info!(id = self.id, "renewed this replica's certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this replica's certificate; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(renew::retry_wait(&cert, SystemTime::now())) => {}
                        _ = stop.recv() => return,
                    }
                }
            }
        }
    }

    /// The PKI in `dir` for replica `id` of the cluster whose CA is `ca`
    /// (copied into `dir`): how one machine runs several replicas.
    pub fn open_with_ca(ca: &Ca, dir: &Path, id: u64) -> Result<Pki, PkiError> {
        if !Ca::exists(dir) {
            ca.save(dir)?;
        }
        Pki::open(dir, id, false)
    }

    /// Joins the cluster through the replica at `addr` with a scheduler
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
            PkiError::Token("a scheduler replica needs a scheduler join token".into())
        })?;
        let ca = Ca::from_pem(j.ca_pem, key)?;
        ca.save(dir)?;
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
    ca.save(dir)?;
    ca.issue(&Identity::Client(ADMIN.into()), ADMIN_VALIDITY)?
        .save(dir, ADMIN)?;
    Ok(ca)
}
