//! The ACL API (`drover.v1.Acl`): bootstrapping access control and
//! managing API tokens (see `crate::state::acl` for what they allow).
//!
//! A token's secret is made here, on the peer the call reached, from
//! the operating system's random source; only its hash is proposed to Raft,
//! and the secret goes back to the caller once, in the answer.

use super::access;
use crate::cluster::peer::Peer;
use crate::state::acl::{self, Permission, Role, Token};
use crate::state::Command;
use drover_proto::pb::{self, acl_server::Acl};
use tonic::{Request, Response, Status};

pub struct AclApi {
    pub peer: Peer,
}

fn wire(t: &Token) -> pb::AclToken {
    pb::AclToken {
        accessor: t.accessor.clone(),
        name: t.name.clone(),
        role: t.role.to_string(),
        job_prefix: t.job_prefix.clone(),
        exec: t.exec,
        logs: t.logs,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms.unwrap_or(0),
    }
}

/// A new token: (what is stored, the token string for the caller).
fn mint(
    name: String,
    role: Role,
    job_prefix: String,
    exec: bool,
    logs: bool,
    expires_ms: Option<i64>,
) -> (Token, String) {
    let accessor = format!("{:016x}", rand::random::<u64>());
    let secret = format!("{:032x}", rand::random::<u128>());
    let token = Token {
        accessor: accessor.clone(),
        secret_hash: acl::hash(&secret),
        name,
        role,
        job_prefix,
        exec,
        logs,
        created_ms: crate::clock::now_ms(),
        expires_ms,
    };
    (token, acl::format(&accessor, &secret))
}

/// Checks a token request; every problem, with its field.
fn validate(r: &pb::CreateAclTokenRequest) -> Result<Role, Status> {
    let mut problems = Vec::new();
    let role = Role::parse(&r.role).map_err(|e| problems.push(format!("role: {e}")));
    if r.name.is_empty() || r.name.len() > 64 || r.name.chars().any(char::is_control) {
        problems.push("name: must be 1 to 64 printable characters".to_string());
    }
    if r.job_prefix.len() > 63
        || !r
            .job_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(
            "job_prefix: at most 63 of a-z, 0-9 and '-' (the start of job names)".to_string(),
        );
    }
    if r.ttl_seconds > 10 * 365 * 24 * 3600 {
        problems.push("ttl_seconds: at most 10 years".to_string());
    }
    match role {
        Ok(role) if problems.is_empty() => Ok(role),
        _ => Err(Status::invalid_argument(problems.join("; "))),
    }
}

/// Bootstraps ACLs through `peer`: the first admin token, and its
/// secret. Refused (`FAILED_PRECONDITION`) once done.
pub async fn bootstrap(peer: &Peer) -> Result<pb::AclTokenSecret, Status> {
    let (token, secret) = mint(
        "bootstrap".into(),
        Role::Admin,
        String::new(),
        true,
        true,
        None,
    );
    let r = peer
        .write(Command::AclBootstrap {
            token: token.clone(),
        })
        .await?;
    r.accepted()?;
    tracing::info!(accessor = %token.accessor, "ACLs bootstrapped");
    Ok(pb::AclTokenSecret {
        token: Some(wire(&token)),
        secret,
    })
}

#[tonic::async_trait]
impl Acl for AclApi {
    async fn bootstrap(
        &self,
        _req: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        // The auth layer let only client certificates through: holders of
        // the cluster's admin credential.
        bootstrap(&self.peer).await.map(Response::new)
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateAclTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        access::check(
            &self.peer,
            &req,
            Permission::Admin,
            None,
            "create ACL tokens",
        )?;
        let r = req.into_inner();
        let role = validate(&r)?;
        let expires =
            (r.ttl_seconds > 0).then(|| crate::clock::now_ms() + r.ttl_seconds as i64 * 1000);
        let (token, secret) = mint(r.name, role, r.job_prefix, r.exec, r.logs, expires);
        let w = self
            .peer
            .write(Command::CreateAclToken {
                token: token.clone(),
            })
            .await?;
        w.accepted()?;
        Ok(Response::new(pb::AclTokenSecret {
            token: Some(wire(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListAclTokensRequest>,
    ) -> Result<Response<pb::ListAclTokensResponse>, Status> {
        access::check(&self.peer, &req, Permission::Admin, None, "list ACL tokens")?;
        let (tokens, _) = self
            .peer
            .read(false, |s| s.acl.tokens.values().map(wire).collect())
            .await?;
        Ok(Response::new(pb::ListAclTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeAclTokenRequest>,
    ) -> Result<Response<pb::RevokeAclTokenResponse>, Status> {
        access::check(
            &self.peer,
            &req,
            Permission::Admin,
            None,
            "revoke ACL tokens",
        )?;
        let accessor = req.into_inner().accessor;
        let r = self
            .peer
            .write(Command::RevokeAclToken { accessor })
            .await?;
        let r = r.accepted()?;
        tracing::info!(accessor = %r.note, "ACL token revoked");
        Ok(Response::new(pb::RevokeAclTokenResponse {
            accessor: r.note,
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let presented = access::presented(&req);
        let state = self.peer.state.read().expect("state lock poisoned");
        let token = state
            .acl
            .authenticate(presented.as_deref(), crate::clock::now_ms())
            .map_err(access::status)?;
        Ok(Response::new(match token {
            Some(t) => wire(t),
            None => pb::AclToken {
                name: "any client certificate (ACLs are not bootstrapped)".into(),
                role: Role::Admin.to_string(),
                exec: true,
                logs: true,
                ..Default::default()
            },
        }))
    }
}
