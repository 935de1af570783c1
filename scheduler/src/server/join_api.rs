//! The join API (`drover.v1.Join`): an agent or a new peer without a
//! certificate proves itself with a join token and gets one signed by the
//! cluster CA for the name it joins as. The joiner verified this peer
//! against the CA fingerprint in its token before sending anything.
//!
//! Renewing is the same signing for a caller that already has a valid
//! certificate: the new one names whom the old one named, never what the
//! request asks for, and only while that node or peer is still part of
//! the cluster (a removed one's certificate runs out; it joins again).

use crate::pki::Authority;
use drover_proto::pb::{self, join_server::Join};
use drover_proto::pki::{
    token::{JoinToken, Role},
    Identity,
};
use tonic::{Request, Response, Status};

pub struct JoinApi {
    /// The CA that signs, and the CA certificates handed out with every
    /// certificate (during a rotation, the old and the new).
    pub authority: Authority,
    /// How long the certificates it signs are valid.
    pub cert_ttl: std::time::Duration,
    /// The cluster, to tell whether a renewing node or peer is in it.
    pub peer: crate::cluster::peer::Peer,
    /// Handed to joining peers with the CA key.
    pub secrets: std::sync::Arc<crate::secrets::SecretKey>,
}

impl JoinApi {
    /// Whether `identity` may renew: a node the cluster knows, a peer
    /// of its membership, or a client.
    fn still_member(&self, identity: &Identity) -> Result<(), Status> {
        let known = match identity {
            Identity::Node(n) => self
                .peer
                .state
                .read()
                .expect("state lock poisoned")
                .nodes
                .contains_key(n),
            Identity::Scheduler(id) => self
                .peer
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(m, _)| m == id),
            Identity::Client(_) => true,
        };
        if known {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{identity} is not part of the cluster (removed?): it joins again with a token"
            )))
        }
    }
}

impl JoinApi {
    /// A join token lets its holder name the node it joins as; it must not
    /// let it take the name of a node that is up (and then speak for it).
    /// A node that lost its state and joins again waits until it is marked
    /// down, or for `drover node rm`.
    fn name_is_free(&self, name: &str) -> Result<(), Status> {
        let state = self.peer.state.read().expect("state lock poisoned");
        match state.nodes.get(name) {
            Some(n) if n.status == crate::state::NodeStatus::Ready => {
                Err(Status::already_exists(format!(
                    "node_name: {name:?} is a node that is up: a second agent cannot join under its name (if this is that node, back without its state, wait until it is marked down or run `drover node rm {name}`)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks the request and decides whom the certificate names.
    fn admit(&self, r: &pb::JoinRequest) -> Result<(JoinToken, Identity), Status> {
        let token =
            JoinToken::parse(&r.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let identity = match token.role {
            Role::Agent => {
                drover_proto::spec::dns_label(&r.node_name)
                    .map_err(|m| Status::invalid_argument(format!("node_name: {m}")))?;
                self.name_is_free(&r.node_name)?;
                Identity::Node(r.node_name.clone())
            }
            Role::Scheduler if r.scheduler_id == 0 => {
                return Err(Status::invalid_argument("scheduler_id: must not be 0"))
            }
            Role::Scheduler => Identity::Scheduler(r.scheduler_id),
        };
        token
            .verify(
                &self.authority.signing(),
                token.role,
                std::time::SystemTime::now(),
            )
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Ok((token, identity))
    }
}

#[tonic::async_trait]
impl Join for JoinApi {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = drover_proto::pki::tls::Peer::clone(
            req.extensions().get().unwrap_or(&Default::default()),
        );
        let r = req.into_inner();
        let (token, identity) = match self.admit(&r) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(peer = ?peer.addr, why = e.message(), "join refused");
                return Err(e);
            }
        };
        let ca = self.authority.signing();
        let cert_pem = ca
            .sign_request(&r.csr_pem, &identity, self.cert_ttl)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        tracing::info!(peer = ?peer.addr, %identity, "joined: certificate issued");
        Ok(Response::new(pb::JoinResponse {
            cert_pem,
            ca_pem: self.authority.bundle(),
            ca_key_pem: match token.role {
                Role::Scheduler => ca.key_pem().to_string(),
                Role::Agent => String::new(),
            },
            secrets_key: match token.role {
                Role::Scheduler => self.secrets.hex(),
                Role::Agent => String::new(),
            },
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        // The auth layer let only callers with a certificate through.
        let identity = drover_proto::pki::tls::peer_identity(&req)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("renewing needs a certificate"))?;
        self.still_member(&identity)
            .inspect_err(|e| tracing::warn!(%identity, why = e.message(), "renewal refused"))?;
        // A client keeps the long life its first certificate had.
        let ttl = match identity {
            Identity::Client(_) => crate::pki::ADMIN_VALIDITY,
            _ => self.cert_ttl,
        };
        let cert_pem = self
            .authority
            .signing()
            .sign_request(&req.get_ref().csr_pem, &identity, ttl)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        tracing::info!(%identity, "certificate renewed");
        Ok(Response::new(pb::RenewResponse {
            cert_pem,
            ca_pem: self.authority.bundle(),
        }))
    }
}
