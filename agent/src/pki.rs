//! This node's certificate, in `<state-dir>/pki`: `ca.pem` (the cluster
//! CA) and `node.pem`/`node.key` (a certificate naming this node, which the
//! schedulers require: a node speaks only for itself). The first start
//! joins with a token from `drover cluster join-token agent`; later starts
//! find the certificate here.

use drover_proto::pki::{ca, tls::TlsMaterial, Credential, Identity, PkiError};
use std::path::Path;
use std::time::SystemTime;

/// The name of the node's credential in the PKI dir.
pub const OWN: &str = "node";

fn usable(dir: &Path, name: &str) -> Result<TlsMaterial, String> {
    let m = TlsMaterial::load(dir, OWN).map_err(|e| e.to_string())?;
    let id = m.credential.identity().map_err(|e| e.to_string())?;
    if id != Identity::Node(name.into()) {
        return Err(format!(
            "the certificate there is for {id}, not node {name}"
        ));
    }
    let end = ca::pem_to_der(&m.credential.cert_pem)
        .ok()
        .and_then(|d| ca::not_after(&d))
        .ok_or("the certificate there cannot be read")?;
    if end <= SystemTime::now() {
        return Err("the certificate there has expired".into());
    }
    Ok(m)
}

/// This node's TLS material: from `<state_dir>/pki`, or, when there is none
/// (or it names another node, or has expired), by joining through one of
/// `schedulers` with `token`.
pub async fn prepare(
    state_dir: &Path,
    name: &str,
    schedulers: &[String],
    token: Option<&str>,
) -> Result<TlsMaterial, PkiError> {
    let dir = state_dir.join("pki");
    let why = match usable(&dir, name) {
        Ok(m) => return Ok(m),
        Err(why) => why,
    };
    let Some(token) = token else {
        return Err(PkiError::Cert {
            what: dir.display().to_string(),
            message: format!(
                "node {name} has no usable certificate ({why}); start it with --join TOKEN \
                 (from `drover cluster join-token agent`)"
            ),
        });
    };
    let mut errors = Vec::new();
    for addr in schedulers {
        match drover_proto::pki::join::join(addr, token, name, 0).await {
            Ok(j) => {
                drover_proto::pki::write_public(&dir.join("ca.pem"), j.ca_pem.as_bytes())?;
                j.credential.save(&dir, OWN)?;
                tracing::info!(node = name, via = %addr, "joined the cluster: certificate kept in {}", dir.display());
                return usable(&dir, name).map_err(|message| PkiError::Cert {
                    what: dir.display().to_string(),
                    message,
                });
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(PkiError::Join(errors.join("; ")))
}

/// Writes a credential issued directly by the CA (`drover dev`, which holds it).
pub fn install(state_dir: &Path, ca_pem: &str, credential: &Credential) -> Result<(), PkiError> {
    let dir = state_dir.join("pki");
    drover_proto::pki::write_public(&dir.join("ca.pem"), ca_pem.as_bytes())?;
    credential.save(&dir, OWN)
}
