//! This node's certificate, in `<state-dir>/pki`: `ca.pem` (the cluster
//! CA) and `node.pem`/`node.key` (a certificate naming this node, which the
//! schedulers require: a node speaks only for itself). The first start
//! joins with a token from `drover cluster join-token agent`; later starts
//! find the certificate here, and [`keep_renewed`] replaces it two thirds
//! into its life while the agent runs.

use drover_proto::pki::{
    ca, renew,
    tls::{ClientTls, LiveTls, TlsMaterial},
    Credential, Identity, PkiError,
};
use std::path::{Path, PathBuf};
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

/// Renews the node's certificate through one of `schedulers` each time it
/// is due (or `now` is notified: the cluster's CAs changed), keeps it in
/// `<state_dir>/pki` and presents it from the next handshake on, until
/// `stop`. A failed renewal is retried, more often as
/// the end nears; the old certificate serves until then.
pub async fn keep_renewed(
    state_dir: PathBuf,
    name: String,
    live: LiveTls,
    schedulers: Vec<String>,
    now: std::sync::Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    let dir = state_dir.join("pki");
    let identity = Identity::Node(name);
    let tls = ClientTls::live(live.clone(), drover_proto::pki::SCHEDULER_NAME);
    let mut next = 0usize;
    loop {
        let cert = live.material().credential.cert_pem;
        let wait = renew::wait(&cert, SystemTime::now());
        let asked = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = now.notified() => true,
            _ = stop.recv() => return,
        };
        if !asked && renew::due(&cert).is_some_and(|at| at > SystemTime::now()) {
            continue; // woke early (the wait is capped): not due yet
        }
        let mut errors = Vec::new();
        let mut renewed = false;
        for _ in 0..schedulers.len() {
            let addr = &schedulers[next % schedulers.len()];
            match renew_through(addr, &tls, &identity, &dir, &live).await {
                Ok(()) => {
                    tracing::info!(node = %identity, via = %addr, "renewed this node's certificate");
                    renewed = true;
                    break;
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
            next += 1;
        }
        if !renewed {
            let retry = renew::retry_wait(&cert, SystemTime::now());
            tracing::warn!(errors = %errors.join("; "), ?retry, "cannot renew this node's certificate");
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.recv() => return,
            }
        }
    }
}

async fn renew_through(
    addr: &str,
    tls: &ClientTls,
    identity: &Identity,
    dir: &Path,
    live: &LiveTls,
) -> Result<(), PkiError> {
    let r = renew::renew(addr, tls, identity).await?;
    let material = TlsMaterial {
        ca_pem: r.ca_pem,
        credential: r.credential,
    };
    // Checked before anything is written: a configuration that cannot be
    // built is refused and the old files stay.
    live.replace(material.clone())?;
    drover_proto::pki::write_public(&dir.join("ca.pem"), material.ca_pem.as_bytes())?;
    material.credential.save(dir, OWN)
}
