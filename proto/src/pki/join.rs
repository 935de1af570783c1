//! The joiner's side of joining: check the cluster against the token's CA
//! fingerprint, send a certificate request with the token, keep what comes
//! back. The key is made here and never leaves this machine.

use super::{ca, tls, token::JoinToken, Credential, PkiError};
use crate::pb;
use std::time::Duration;

/// What a join gives: this process's credential and the cluster CA, and for
/// a scheduler replica the CA's key.
pub struct Joined {
    pub credential: Credential,
    pub ca_pem: String,
    pub ca_key_pem: Option<String>,
    /// For a scheduler replica: the key secrets are sealed with (hex).
    pub secrets_key: Option<String>,
}

/// Joins through the scheduler at `addr` (`HOST:PORT`) with `token`, as node
/// `node_name` (agent tokens) or replica `scheduler_id` (scheduler tokens).
pub async fn join(
    addr: &str,
    token: &str,
    node_name: &str,
    scheduler_id: u64,
) -> Result<Joined, PkiError> {
    let parsed = JoinToken::parse(token)?;
    let (csr_pem, key_pem) = ca::request()?;
    let config = tls::pinned_client_config(&parsed.ca_fingerprint);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| PkiError::Tls(format!("scheduler address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = tls::ClientTls::new(config, super::SCHEDULER_NAME)
        .connect(&endpoint)
        .await
        .map_err(|e| PkiError::Join(format!("{addr}: {}", source_chain(&e))))?;
    let r = pb::join_client::JoinClient::new(channel)
        .join(pb::JoinRequest {
            token: token.trim().to_string(),
            csr_pem,
            node_name: node_name.to_string(),
            scheduler_id,
        })
        .await
        .map_err(|s| PkiError::Join(format!("{addr} refused: {}", s.message())))?
        .into_inner();
    if ca::fingerprint(&ca::pem_to_der(&r.ca_pem)?) != parsed.ca_fingerprint {
        return Err(PkiError::Token(
            "the CA the scheduler sent is not the one the token names".into(),
        ));
    }
    Ok(Joined {
        credential: Credential {
            cert_pem: r.cert_pem,
            key_pem,
        },
        ca_pem: r.ca_pem,
        ca_key_pem: Some(r.ca_key_pem).filter(|k| !k.is_empty()),
        secrets_key: Some(r.secrets_key).filter(|k| !k.is_empty()),
    })
}

/// An error with its causes, which say what really went wrong in a handshake.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
