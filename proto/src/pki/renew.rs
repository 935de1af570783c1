//! Renewing a certificate before it ends. Certificates are short-lived
//! (a month by default) so that a stolen key is useful for weeks, not
//! years; a process that holds one asks for a new one two thirds into its
//! life, proving who it is with the old one (the identity comes from the
//! TLS handshake, never from the request) and a fresh key that never leaves
//! it. A renewal that fails is retried; the old certificate stays in use
//! until it ends.

use super::{ca, tls::ClientTls, Credential, Identity, PkiError};
use crate::pb;
use std::time::{Duration, SystemTime};

/// The shortest wait between attempts, so a failing renewal never spins.
pub const MIN_WAIT: Duration = Duration::from_secs(1);
/// The longest wait: a clock that jumps, or a CA that changes, is noticed
/// within this.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// When the certificate in `cert_pem` is due for renewal: two thirds of
/// the way from its start to its end. `None` if it cannot be read.
pub fn due(cert_pem: &str) -> Option<SystemTime> {
    let der = ca::pem_to_der(cert_pem).ok()?;
    let (start, end) = ca::validity(&der)?;
    let life = end.duration_since(start).ok()?;
    Some(start + life * 2 / 3)
}

/// How long to wait before renewing `cert_pem`, at `now`: until it is
/// due, within [`MIN_WAIT`]..=[`MAX_WAIT`]; an unreadable certificate is
/// due at once.
pub fn wait(cert_pem: &str, now: SystemTime) -> Duration {
    due(cert_pem)
        .map(|at| at.duration_since(now).unwrap_or_default())
        .unwrap_or_default()
        .clamp(MIN_WAIT, MAX_WAIT)
}

/// How long to wait after a failed attempt for a certificate ending at
/// `end`: a tenth of what is left, within a second and a minute.
pub fn retry_wait(cert_pem: &str, now: SystemTime) -> Duration {
    let left = ca::pem_to_der(cert_pem)
        .ok()
        .and_then(|d| ca::validity(&d))
        .and_then(|(_, end)| end.duration_since(now).ok())
        .unwrap_or_default();
    (left / 10).clamp(MIN_WAIT, Duration::from_secs(60))
}

/// What a renewal gives: the new credential and the CA certificates to
/// trust from now on.
pub struct Renewed {
    pub credential: Credential,
    pub ca_pem: String,
}

/// Renews the credential `tls` presents through a scheduler at `addr`
/// (`HOST:PORT`); the new certificate must name `identity`, as the old one did.
pub async fn renew(addr: &str, tls: &ClientTls, identity: &Identity) -> Result<Renewed, PkiError> {
    let url = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| PkiError::Tls(format!("scheduler address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = tls
        .connect(&endpoint)
        .await
        .map_err(|e| PkiError::Join(format!("{addr}: {}", super::join::source_chain(&e))))?;
    renew_over(channel, identity).await
}

/// Like [`renew`], over a channel already open.
pub async fn renew_over(
    channel: tonic::transport::Channel,
    identity: &Identity,
) -> Result<Renewed, PkiError> {
    let (csr_pem, key_pem) = ca::request()?;
    let r = pb::join_client::JoinClient::new(channel)
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|s| PkiError::Join(format!("renewal refused: {}", s.message())))?
        .into_inner();
    let credential = Credential {
        cert_pem: r.cert_pem,
        key_pem,
    };
    let got = credential.identity()?;
    if &got != identity {
        return Err(PkiError::Cert {
            what: "renewed certificate".into(),
            message: format!("names {got}, not {identity}"),
        });
    }
    Ok(Renewed {
        credential,
        ca_pem: r.ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::Ca;

    #[test]
    fn a_certificate_is_due_two_thirds_into_its_life() {
        let ca = Ca::generate("t").unwrap();
        let c = ca
            .issue(&Identity::Node("n".into()), Duration::from_secs(3 * 3600))
            .unwrap();
        let (start, end) = ca::validity(&ca::pem_to_der(&c.cert_pem).unwrap()).unwrap();
        let at = due(&c.cert_pem).unwrap();
        // Backdated a tenth of its life, due two thirds from that start.
        assert_eq!(at, start + (end.duration_since(start).unwrap()) * 2 / 3);
        assert_eq!(wait(&c.cert_pem, at + Duration::from_secs(5)), MIN_WAIT);
        let w = wait(&c.cert_pem, start);
        assert_eq!(w, MAX_WAIT);
        assert_eq!(wait("not a certificate", start), MIN_WAIT);
        let r = retry_wait(&c.cert_pem, end - Duration::from_secs(100));
        assert_eq!(r, Duration::from_secs(10));
        assert_eq!(
            retry_wait(&c.cert_pem, end + Duration::from_secs(1)),
            MIN_WAIT
        );
    }
}
