//! This replica's keys and certificates, in `<pki-dir>` (default
//! `<data-dir>/pki`): the cluster CA (`ca.pem`, `ca.key`), this replica's
//! certificate (`scheduler.pem`, `scheduler.key`) and, where the CA was
//! made, the first administrator's (`admin.pem`, `admin.key`: what `drover`
//! uses until API tokens exist).

use drover_proto::pki::{
    ca::{self, Ca, LEAF_VALIDITY},
    tls::TlsMaterial,
    Credential, Identity, PkiError,
};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

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
    pub material: TlsMaterial,
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
    let Some(end) = ca::pem_to_der(&c.cert_pem)
        .ok()
        .and_then(|d| ca::not_after(&d))
    else {
        return true;
    };
    end.duration_since(SystemTime::now())
        .map(|left| left < LEAF_VALIDITY / 3)
        .unwrap_or(true)
}

impl Pki {
    /// The PKI in `dir` for replica `id`. Without a CA there, one is made
    /// if `bootstrap` (this replica starts a new cluster), with an admin
    /// credential beside it; otherwise it is an error saying how to get one.
    pub fn open(dir: &Path, id: u64, bootstrap: bool) -> Result<Pki, PkiError> {
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
            ca.issue(&identity, LEAF_VALIDITY)?.save(dir, OWN)?;
        }
        Ok(Pki {
            material: TlsMaterial::load(dir, OWN)?,
            ca: Arc::new(ca),
        })
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
    pub async fn join(dir: &Path, id: u64, addr: &str, token: &str) -> Result<Pki, PkiError> {
        let j = drover_proto::pki::join::join(addr, token, "", id).await?;
        let key = j.ca_key_pem.ok_or_else(|| {
            PkiError::Token("a scheduler replica needs a scheduler join token".into())
        })?;
        let ca = Ca::from_pem(j.ca_pem, key)?;
        ca.save(dir)?;
        j.credential.save(dir, OWN)?;
        Pki::open(dir, id, false)
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
