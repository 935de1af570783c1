//! Access control: API tokens with roles, kept in the replicated state.
//!
//! A certificate says a caller is a client of this cluster; a token says
//! what it may do. Until `drover acl bootstrap` every client certificate
//! may do everything (a new cluster starts the way it always did). The
//! bootstrap, allowed once, creates the first `admin` token; from then on
//! every client call must carry a token (`authorization: Bearer …`):
//!
//! | role      | may                                                        |
//! |-----------|------------------------------------------------------------|
//! | `read`    | list and inspect jobs, allocations, nodes, members         |
//! | `operate` | `read`, and run, scale, stop, roll back, restart jobs, drain and remove nodes |
//! | `admin`   | everything: membership, join tokens, ACL tokens, exec, logs |
//!
//! `exec` and `logs` are extra permissions a `read` or `operate` token may
//! be given. A token with a job prefix reaches only the jobs whose names
//! start with it, and nothing cluster-wide (it cannot drain a node).
//!
//! A token is `DRVT-<accessor>-<secret>`: the accessor (public, 16 hex
//! digits) names it in `acl token ls` and `revoke`; only the SHA-256 of the
//! 128-bit secret is stored, so the state (and its snapshots) cannot be
//! turned back into tokens. This module is pure: the handlers pass in the
//! time and the random parts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The ACL part of the state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    /// Whether tokens are required (set, once, by the bootstrap).
    pub bootstrapped: bool,
    /// By accessor.
    pub tokens: BTreeMap<String, Token>,
}

/// A token as stored: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub accessor: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// What it is for, in words (`ci`, `alice`).
    pub name: String,
    pub role: Role,
    /// Only jobs whose names start with this ("": every job).
    #[serde(default)]
    pub job_prefix: String,
    #[serde(default)]
    pub exec: bool,
    #[serde(default)]
    pub logs: bool,
    pub created_ms: i64,
    /// When it stops working (`None`: never).
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Operate,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "operate" => Ok(Role::Operate),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("{s:?} is not a role (read, operate or admin)")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        })
    }
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Inspect.
    Read,
    /// Change jobs and nodes.
    Operate,
    /// Run a command in a replica.
    Exec,
    /// Read a replica's output.
    Logs,
    /// Manage the cluster and its tokens.
    Admin,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Operate => "operate",
            Permission::Exec => "exec",
            Permission::Logs => "logs",
            Permission::Admin => "admin",
        })
    }
}

/// Why a call is refused: `Unauthenticated` when the token is missing or
/// unknown, `Denied` when it may not do this. Never holds the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("this cluster requires an ACL token: give one with --token or DROVER_TOKEN (`drover acl token create`)")]
    Missing,
    #[error(
        "the ACL token is malformed: it should look like DRVT-<16 hex digits>-<32 hex digits>"
    )]
    Malformed,
    #[error("ACL token {accessor} is not known (revoked, or never created)")]
    Unknown { accessor: String },
    #[error("ACL token {accessor} ({name}) expired")]
    Expired { accessor: String, name: String },
    #[error("ACL token {accessor} ({name}, role {role}{scope}) may not {what}")]
    Denied {
        accessor: String,
        name: String,
        role: Role,
        scope: String,
        what: String,
    },
}

impl AclError {
    pub fn is_denied(&self) -> bool {
        matches!(self, AclError::Denied { .. })
    }
}

const PREFIX: &str = "DRVT-";

/// Splits a token into its accessor and secret.
pub fn parse(token: &str) -> Result<(&str, &str), AclError> {
    let rest = token
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(AclError::Malformed)?;
    let (accessor, secret) = rest.split_once('-').ok_or(AclError::Malformed)?;
    let hex = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(accessor, 16) || !hex(secret, 32) {
        return Err(AclError::Malformed);
    }
    Ok((accessor, secret))
}

/// The token string for `accessor` and `secret` (hex, as [`parse`] wants).
pub fn format(accessor: &str, secret: &str) -> String {
    format!("{PREFIX}{accessor}-{secret}")
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.to_ascii_lowercase().as_bytes()))
}

/// Compares in time independent of where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Token {
    /// Whether it may do `permission`, on job `job` (`None`: something
    /// cluster-wide).
    pub fn allows(&self, permission: Permission, job: Option<&str>) -> bool {
        let by_role = match permission {
            Permission::Read => true,
            Permission::Operate => self.role >= Role::Operate,
            Permission::Exec => self.role == Role::Admin || self.exec,
            Permission::Logs => self.role == Role::Admin || self.logs,
            Permission::Admin => self.role == Role::Admin,
        };
        let in_scope = match job {
            Some(job) => job.starts_with(&self.job_prefix),
            // Reading cluster-wide things (nodes, members) is harmless;
            // changing them is not for a token fenced to some jobs.
            None => self.job_prefix.is_empty() || permission == Permission::Read,
        };
        by_role && in_scope
    }

    /// Whether job `name` is visible to it.
    pub fn sees(&self, job: &str) -> bool {
        job.starts_with(&self.job_prefix)
    }

    fn scope(&self) -> String {
        let mut s = String::new();
        if !self.job_prefix.is_empty() {
            s.push_str(&format!(", jobs {}*", self.job_prefix));
        }
        if self.exec {
            s.push_str(", exec");
        }
        if self.logs {
            s.push_str(", logs");
        }
        s
    }
}

impl Acl {
    /// The token `presented` (the whole string), if the cluster requires
    /// tokens; `Ok(None)` if it does not yet.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<&Token>, AclError> {
        if !self.bootstrapped {
            return Ok(None);
        }
        let (accessor, secret) = parse(presented.ok_or(AclError::Missing)?)?;
        let unknown = || AclError::Unknown {
            accessor: accessor.to_ascii_lowercase(),
        };
        let t = self
            .tokens
            .get(&accessor.to_ascii_lowercase())
            .ok_or_else(unknown)?;
        if !same(&t.secret_hash, &hash(secret)) {
            return Err(unknown());
        }
        if t.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(AclError::Expired {
                accessor: t.accessor.clone(),
                name: t.name.clone(),
            });
        }
        Ok(Some(t))
    }

    /// Checks that `presented` may do `permission` on `job`; `what` says
    /// what the call does, for the refusal. `Ok(None)`: tokens are not
    /// required yet.
    pub fn authorize(
        &self,
        presented: Option<&str>,
        now_ms: i64,
        permission: Permission,
        job: Option<&str>,
        what: &str,
    ) -> Result<Option<&Token>, AclError> {
        let Some(t) = self.authenticate(presented, now_ms)? else {
            return Ok(None);
        };
        if t.allows(permission, job) {
            Ok(Some(t))
        } else {
            Err(AclError::Denied {
                accessor: t.accessor.clone(),
                name: t.name.clone(),
                role: t.role,
                scope: t.scope(),
                what: what.to_string(),
            })
        }
    }

    /// Applies the bootstrap: refused once done (but the same bootstrap
    /// again, a retry whose first answer was lost, succeeds).
    pub fn bootstrap(&mut self, token: Token) -> Result<(), String> {
        if self.bootstrapped && self.tokens.get(&token.accessor) == Some(&token) {
            return Ok(());
        }
        if self.bootstrapped {
            return Err("ACLs were bootstrapped already: ask an administrator for a token".into());
        }
        self.bootstrapped = true;
        self.tokens.insert(token.accessor.clone(), token);
        Ok(())
    }

    pub fn create(&mut self, token: Token) -> Result<(), String> {
        if !self.bootstrapped {
            return Err("ACLs are not bootstrapped: run `drover acl bootstrap` first".into());
        }
        match self.tokens.get(&token.accessor) {
            // A retry of this very creation.
            Some(t) if *t == token => return Ok(()),
            Some(_) => return Err(format!("a token with accessor {} exists", token.accessor)),
            None => {}
        }
        self.tokens.insert(token.accessor.clone(), token);
        Ok(())
    }

    /// Revokes the token named by `accessor` (or a unique prefix of it, 4
    /// digits at least); returns the accessor.
    pub fn revoke(&mut self, accessor: &str) -> Result<String, String> {
        let a = accessor.to_ascii_lowercase();
        let matches: Vec<String> = self
            .tokens
            .keys()
            .filter(|k| a.len() >= 4 && k.starts_with(&a))
            .cloned()
            .collect();
        match matches.as_slice() {
            [one] => {
                self.tokens.remove(one);
                Ok(one.clone())
            }
            [] => Err(format!("no ACL token with accessor {accessor:?}")),
            _ => Err(format!(
                "accessor {accessor:?} is ambiguous: {} tokens start with it",
                matches.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, prefix: &str) -> (Token, String) {
        let accessor = "0123456789abcdef".to_string();
        let secret = "00112233445566778899aabbccddeeff".to_string();
        (
            Token {
                accessor: accessor.clone(),
                secret_hash: hash(&secret),
                name: "t".into(),
                role,
                job_prefix: prefix.into(),
                exec: false,
                logs: false,
                created_ms: 0,
                expires_ms: Some(1000),
            },
            format(&accessor, &secret),
        )
    }

    #[test]
    fn until_the_bootstrap_no_token_is_needed_and_after_it_one_is() {
        let mut acl = Acl::default();
        assert_eq!(acl.authenticate(None, 0), Ok(None));
        let (t, s) = token(Role::Admin, "");
        acl.bootstrap(t.clone()).unwrap();
        acl.bootstrap(t.clone())
            .expect("the same bootstrap again (a retry) succeeds");
        let mut t = t;
        t.accessor = "ffffffffffffffff".into();
        assert!(acl
            .bootstrap(t)
            .unwrap_err()
            .contains("bootstrapped already"));
        assert_eq!(acl.authenticate(None, 0), Err(AclError::Missing));
        assert_eq!(
            acl.authenticate(Some("nonsense"), 0),
            Err(AclError::Malformed)
        );
        assert_eq!(acl.authenticate(Some(&s), 0).unwrap().unwrap().name, "t");
        // A wrong secret for a real accessor reads like an unknown token.
        let wrong = format("0123456789abcdef", "ffffffffffffffffffffffffffffffff");
        let e = acl.authenticate(Some(&wrong), 0).unwrap_err();
        assert!(matches!(e, AclError::Unknown { .. }));
        assert!(
            !e.to_string().contains("ffff"),
            "the secret is never repeated: {e}"
        );
        assert!(matches!(
            acl.authenticate(Some(&s), 1000),
            Err(AclError::Expired { .. })
        ));
        assert_eq!(acl.revoke("0123").unwrap(), "0123456789abcdef");
        assert!(matches!(
            acl.authenticate(Some(&s), 0),
            Err(AclError::Unknown { .. })
        ));
    }

    #[test]
    fn roles_and_prefixes_bound_what_a_token_may_do() {
        let (read, _) = token(Role::Read, "");
        let (op, _) = token(Role::Operate, "team-a-");
        let (admin, _) = token(Role::Admin, "");
        assert!(read.allows(Permission::Read, Some("x")));
        assert!(!read.allows(Permission::Operate, Some("x")));
        assert!(!read.allows(Permission::Logs, Some("x")));
        assert!(op.allows(Permission::Operate, Some("team-a-web")));
        assert!(!op.allows(Permission::Operate, Some("team-b-web")));
        assert!(!op.allows(Permission::Read, Some("team-b-web")));
        assert!(op.allows(Permission::Read, None), "nodes are readable");
        assert!(!op.allows(Permission::Operate, None), "no node drain");
        assert!(!op.allows(Permission::Exec, Some("team-a-web")));
        let mut with_exec = op.clone();
        with_exec.exec = true;
        assert!(with_exec.allows(Permission::Exec, Some("team-a-web")));
        assert!(!with_exec.allows(Permission::Admin, None));
        for p in [
            Permission::Read,
            Permission::Operate,
            Permission::Exec,
            Permission::Logs,
            Permission::Admin,
        ] {
            assert!(admin.allows(p, None) && admin.allows(p, Some("any")));
        }
        let mut acl = Acl::default();
        let (t, s) = token(Role::Read, "");
        acl.bootstrap(t).unwrap();
        let e = acl
            .authorize(
                Some(&s),
                0,
                Permission::Operate,
                Some("web"),
                "submit job \"web\"",
            )
            .unwrap_err();
        assert!(e.is_denied());
        assert_eq!(
            e.to_string(),
            "ACL token 0123456789abcdef (t, role read) may not submit job \"web\""
        );
    }
}
