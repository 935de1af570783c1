//! Who may call what, checked before any work: a tower layer in front of
//! every service of the listener, reading the identity the TLS handshake
//! verified (`drover_proto::pki::tls::Peer`, from the client certificate).
//!
//! | service / method                 | callers                     |
//! |----------------------------------|-----------------------------|
//! | `Join/Join`                      | anyone (the token is checked inside) |
//! | `Join/Renew`                     | anyone with a certificate (renews that identity) |
//! | `Drover/*` (the client API)      | clients, peers           |
//! | `NodeService/*`                  | nodes (each only as itself: `node_api`); `Heartbeat` also peers passing one on |
//! | `RaftService/*`                  | peers                    |
//! | `Cluster/Forward`, `ForwardBatch`, `ReadIndex` | peers       |
//! | `Cluster/CreateJoinToken`        | clients                     |
//! | `Cluster/*` (membership, status) | clients, peers           |
//! | `Acl/*`                          | clients                     |
//!
//! Within what a certificate reaches, a client's ACL token decides (once
//! ACLs are bootstrapped; see `super::access`).
//!
//! A call without a certificate, or from the wrong kind of caller, is
//! answered `UNAUTHENTICATED` / `PERMISSION_DENIED` naming what was wrong,
//! and logged.

use drover_proto::pki::{tls::Peer, Identity};
use tonic::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Client,
    Node,
    Scheduler,
}

fn kind(id: &Identity) -> Kind {
    match id {
        Identity::Client(_) => Kind::Client,
        Identity::Node(_) => Kind::Node,
        Identity::Scheduler(_) => Kind::Scheduler,
    }
}

/// The kinds of caller allowed on `path` (`/drover.v1.Service/Method`);
/// `None`: no certificate needed.
fn allowed(path: &str) -> Option<&'static [Kind]> {
    use Kind::*;
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let service = service.strip_prefix("drover.v1.").unwrap_or("");
    Some(match (service, method) {
        ("Join", "Join") => return None,
        ("Join", "Renew") => &[Client, Node, Scheduler],
        ("Drover", _) => &[Client, Scheduler],
        // A follower passes a node's heartbeat on to the leader.
        ("NodeService", "Heartbeat") => &[Node, Scheduler],
        ("NodeService", _) => &[Node],
        ("RaftService", _) => &[Scheduler],
        ("Cluster", "Forward" | "ForwardBatch" | "ReadIndex") => &[Scheduler],
        ("Cluster", "CreateJoinToken") => &[Client],
        ("Cluster", _) => &[Client, Scheduler],
        ("Acl", _) => &[Client],
        _ => &[],
    })
}

/// Decides a call on `path` from a peer with `identity`.
pub fn check(path: &str, identity: Option<&Identity>) -> Result<(), Status> {
    let Some(kinds) = allowed(path) else {
        return Ok(());
    };
    let Some(id) = identity else {
        return Err(Status::unauthenticated(format!(
            "{path} needs a client certificate signed by the cluster CA (see `drover --help`: --ca-cert, --cert, --key)"
        )));
    };
    if kinds.contains(&kind(id)) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{id} may not call {path}"
        )))
    }
}

/// The gate: refuses calls [`check`] refuses, before the service sees
/// them, and logs who tried.
#[derive(Clone, Copy, Debug, Default)]
pub struct Authorize;

impl super::gate::Gate for Authorize {
    fn check(
        &self,
        path: &str,
        _headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<(), Status> {
        let peer = extensions.get::<Peer>();
        let identity = peer.and_then(|p| p.identity.as_ref());
        check(path, identity).inspect_err(|status| {
            tracing::warn!(
                peer = ?peer.and_then(|p| p.addr),
                identity = ?identity,
                path,
                why = status.message(),
                "call refused"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_caller_reaches_only_its_services() {
        let client = Identity::Client("admin".into());
        let node = Identity::Node("n1".into());
        let peer = Identity::Scheduler(2);
        let submit = "/drover.v1.Drover/SubmitJob";
        let heartbeat = "/drover.v1.NodeService/Heartbeat";
        let append = "/drover.v1.RaftService/Append";
        let forward = "/drover.v1.Cluster/Forward";
        let members = "/drover.v1.Cluster/Members";
        let token = "/drover.v1.Cluster/CreateJoinToken";
        let join = "/drover.v1.Join/Join";
        let ok = |p, i: &Identity| check(p, Some(i)).is_ok();
        assert!(ok(submit, &client) && ok(submit, &peer) && !ok(submit, &node));
        assert!(ok(heartbeat, &node) && ok(heartbeat, &peer) && !ok(heartbeat, &client));
        let report = "/drover.v1.NodeService/Report";
        assert!(ok(report, &node) && !ok(report, &peer) && !ok(report, &client));
        assert!(ok(append, &peer) && !ok(append, &client) && !ok(append, &node));
        assert!(ok(forward, &peer) && !ok(forward, &client));
        let batch = "/drover.v1.Cluster/ForwardBatch";
        assert!(ok(batch, &peer) && !ok(batch, &client) && !ok(batch, &node));
        assert!(ok(members, &client) && ok(members, &peer) && !ok(members, &node));
        assert!(ok(token, &client) && !ok(token, &node) && !ok(token, &peer));
        assert!(check(join, None).is_ok());
        let renew = "/drover.v1.Join/Renew";
        assert!(ok(renew, &client) && ok(renew, &node) && ok(renew, &peer));
        assert_eq!(
            check(renew, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(!ok("/drover.v1.Unknown/X", &client));
        assert!(!ok("/grpc.health.v1.Health/Check", &client));
        let e = check(submit, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = check(submit, Some(&node)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("node n1 may not call"),
            "{}",
            e.message()
        );
    }
}
