//! Checking a client call's ACL token (see `crate::state::acl`): which
//! permission each call needs, on which job, is decided by its handler,
//! which asks here before doing anything.
//!
//! The token comes from the `authorization: Bearer DRVT-…` metadata. The
//! token table is read from this peer's state, without a round trip to
//! the leader: a token revoked a moment ago stops working on each peer
//! as soon as it applied the revocation (milliseconds behind the leader).
//! Other peers' calls (forwarded ones) carry no token and pass: they
//! were checked where they came in.

use crate::cluster::peer::Peer;
use crate::state::acl::{AclError, Permission, Token};
use drover_proto::pki::{tls::peer_identity, Identity};
use tonic::{Request, Status};

/// The token in an `authorization` value (`Bearer TOKEN`, any case, or
/// the bare token).
pub fn bearer(value: &str) -> &str {
    let v = value.trim();
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
        _ => v,
    }
}

/// The token a request presents, if any.
pub fn presented<T>(req: &Request<T>) -> Option<String> {
    let v = req.metadata().get("authorization")?.to_str().ok()?;
    Some(bearer(v).to_string())
}

/// What an ACL refusal is on the wire.
pub fn status(e: AclError) -> Status {
    if e.is_denied() {
        Status::permission_denied(e.to_string())
    } else {
        Status::unauthenticated(e.to_string())
    }
}

/// Whether the caller of `req` may do `permission` on `job` (`None`:
/// cluster-wide); `what` names the call for the refusal. `Ok(None)` when
/// no token is needed (ACLs not bootstrapped, or another peer calling);
/// the token otherwise, for handlers that filter what it sees.
pub fn check<T>(
    peer: &Peer,
    req: &Request<T>,
    permission: Permission,
    job: Option<&str>,
    what: &str,
) -> Result<Option<Token>, Status> {
    if matches!(peer_identity(req), Some(Identity::Scheduler(_))) {
        return Ok(None);
    }
    let token = presented(req);
    let state = peer.state.read().expect("state lock poisoned");
    let r = state
        .acl
        .authorize(
            token.as_deref(),
            crate::clock::now_ms(),
            permission,
            job,
            what,
        )
        .map(|t| t.cloned());
    drop(state);
    r.map_err(|e| {
        tracing::warn!(peer = ?peer_identity(req), why = %e, "call refused by ACL");
        status(e)
    })
}
