//! Rate limits: no one caller can take a peer's capacity from the rest.
//!
//! Each caller has a token bucket (the `governor` crate's GCRA) of `rate`
//! requests a second with bursts of `burst`: an ACL token (by its public
//! accessor, when it is one the cluster knows: several users may share a
//! client certificate, each with a token of their own), else the identity
//! of its certificate (a client or a node). A connection without a
//! certificate (only joining is open to one) is limited by its address,
//! more tightly.
//! Peers are never limited: Raft and forwarded calls are the cluster's
//! own work. A call over the limit is answered `RESOURCE_EXHAUSTED` with
//! how long to wait (in the message and in the `retry-after-ms` metadata)
//! before anything else happens, so the caller loses nothing by retrying.
//!
//! Without TLS (`--insecure-plaintext`) there are no identities to key
//! buckets by, and peers could not be told from clients: no limits.
//!
//! This layer sits outside the authorization layer: a flood of calls that
//! would be refused costs no more than a flood that would be served.

use drover_proto::pki::{tls::Peer, Identity};
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// The metadata key carrying how long to wait, in milliseconds.
pub const RETRY_AFTER: &str = "retry-after-ms";

/// The limits, per caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests a second, per identity.
    pub rate: u32,
    /// How many may come at once.
    pub burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            rate: 500,
            burst: 1000,
        }
    }
}

/// Requests a second (and burst) for a caller without a certificate, per
/// address: joining is rare, and a forged token should not get many tries.
const ANONYMOUS: (u32, u32) = (5, 20);

/// The accessor of a token (the whole string) if it is a valid ACL token
/// of the cluster, secret and all: neither an unknown accessor nor someone
/// else's accessor with a wrong secret buys (or drains) a bucket.
pub type KnownToken = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub struct RateLimiter {
    identities: Arc<DefaultKeyedRateLimiter<String>>,
    known_token: Option<KnownToken>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    limits: RateLimits,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter::with_tokens(limits, None)
    }

    /// Keys calls that carry a known ACL token by that token.
    pub fn with_tokens(limits: RateLimits, known_token: Option<KnownToken>) -> RateLimiter {
        let quota = |rate, burst| Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst));
        RateLimiter {
            identities: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.rate,
                limits.burst,
            ))),
            addresses: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                ANONYMOUS.0,
                ANONYMOUS.1,
            ))),
            limits,
            known_token,
        }
    }

    /// Forgets callers whose buckets are full again (they would get a
    /// fresh one anyway), so the maps hold only recent callers. Call it
    /// now and then.
    pub fn forget_idle(&self) {
        self.identities.retain_recent();
        self.identities.shrink_to_fit();
        self.addresses.retain_recent();
        self.addresses.shrink_to_fit();
    }

    /// Decides a call from `peer` presenting `token` (the `authorization`
    /// value, if any): `Err` with the status to answer when it is over its
    /// limit.
    pub fn admit(&self, peer: Option<&Peer>, token: Option<&str>) -> Result<(), Status> {
        let identity = peer.and_then(|p| p.identity.as_ref());
        let (who, wait) = match identity {
            Some(Identity::Scheduler(_)) => return Ok(()),
            Some(id) => {
                let accessor = token
                    .map(super::access::bearer)
                    .and_then(|t| self.known_token.as_ref().and_then(|k| k(t)));
                let (key, who) = match accessor {
                    Some(a) => (format!("token:{a}"), format!("ACL token {a}")),
                    None => (format!("cert:{}", id.uri()), id.to_string()),
                };
                match self.identities.check_key(&key) {
                    Ok(()) => return Ok(()),
                    Err(not_until) => (
                        format!("{who}: more than {} requests a second", self.limits.rate),
                        not_until.wait_time_from(self.identities.clock().now()),
                    ),
                }
            }
            None => {
                let Some(ip) = peer.and_then(|p| p.addr).map(|a| a.ip()) else {
                    return Ok(());
                };
                match self.addresses.check_key(&ip) {
                    Ok(()) => return Ok(()),
                    Err(not_until) => (
                        format!(
                            "{ip} (no certificate): more than {} requests a second",
                            ANONYMOUS.0
                        ),
                        not_until.wait_time_from(self.addresses.clock().now()),
                    ),
                }
            }
        };
        Err(over_limit(&who, wait))
    }
}

/// The answer to a call over its limit.
fn over_limit(who: &str, wait: Duration) -> Status {
    let ms = wait.as_millis().max(1) as u64;
    let mut s = Status::resource_exhausted(format!(
        "rate limited ({who}); nothing was done: retry in {ms}ms"
    ));
    if let Ok(v) = ms.to_string().parse() {
        s.metadata_mut().insert(RETRY_AFTER, v);
    }
    s
}

impl super::gate::Gate for RateLimiter {
    fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<(), Status> {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok());
        self.admit(extensions.get::<Peer>(), token)
            .inspect_err(|status| tracing::debug!(path, why = status.message(), "call limited"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: Option<Identity>, ip: &str) -> Peer {
        Peer {
            addr: Some(format!("{ip}:5000").parse().unwrap()),
            identity: id,
        }
    }

    #[test]
    fn a_caller_over_its_burst_is_limited_and_others_are_not() {
        let l = RateLimiter::new(RateLimits { rate: 1, burst: 3 });
        let a = peer(Some(Identity::Client("a".into())), "10.0.0.1");
        let b = peer(Some(Identity::Client("b".into())), "10.0.0.1");
        for _ in 0..3 {
            l.admit(Some(&a), None).unwrap();
        }
        let e = l.admit(Some(&a), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message()
                .contains("client a: more than 1 requests a second"),
            "{}",
            e.message()
        );
        let ms: u64 = e
            .metadata()
            .get(RETRY_AFTER)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1000).contains(&ms), "{ms}");
        // Another identity, from the same address, has its own bucket.
        l.admit(Some(&b), None).unwrap();
        // Peers are never limited.
        let r = peer(Some(Identity::Scheduler(2)), "10.0.0.2");
        for _ in 0..100 {
            l.admit(Some(&r), None).unwrap();
        }
    }

    #[test]
    fn callers_without_a_certificate_are_limited_by_address() {
        let l = RateLimiter::new(RateLimits::default());
        let x = peer(None, "10.0.0.9");
        for _ in 0..ANONYMOUS.1 {
            l.admit(Some(&x), None).unwrap();
        }
        let e = l.admit(Some(&x), None).unwrap_err();
        assert!(
            e.message().contains("10.0.0.9 (no certificate)"),
            "{}",
            e.message()
        );
        l.admit(Some(&peer(None, "10.0.0.10")), None).unwrap();
    }

    #[test]
    fn known_tokens_have_buckets_of_their_own_and_unknown_ones_do_not() {
        let known: KnownToken = Arc::new(|t: &str| {
            let (a, secret) = crate::state::acl::parse(t).ok()?;
            (a == "000000000000000a" && secret == "1".repeat(32)).then(|| a.to_string())
        });
        let l = RateLimiter::with_tokens(RateLimits { rate: 1, burst: 2 }, Some(known));
        let admin = peer(Some(Identity::Client("admin".into())), "10.0.0.1");
        let a = crate::state::acl::format("000000000000000a", &"1".repeat(32));
        // Someone else's accessor with a wrong secret: not that token's bucket.
        let forged = crate::state::acl::format("000000000000000a", &"2".repeat(32));
        for _ in 0..2 {
            l.admit(Some(&admin), Some(&format!("bearer {a}"))).unwrap();
        }
        let e = l.admit(Some(&admin), Some(&a)).unwrap_err();
        assert!(
            e.message().contains("ACL token 000000000000000a"),
            "{}",
            e.message()
        );
        // The certificate without a token (or with one the cluster does
        // not know) still has its own bucket, shared by all such calls.
        l.admit(Some(&admin), None).unwrap();
        l.admit(Some(&admin), Some(&forged)).unwrap();
        let e = l.admit(Some(&admin), Some(&forged)).unwrap_err();
        assert!(e.message().contains("client admin"), "{}", e.message());
    }
}
