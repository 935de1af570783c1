//! Backing off when the scheduler says "too many requests", and moving on
//! when a peer cannot serve.
//!
//! A scheduler answers a caller over its rate limit with
//! `RESOURCE_EXHAUSTED` and a `retry-after-ms` before doing anything, so
//! the call can simply be made again. [`Backoff`] wraps the channel to the
//! scheduler and does that: it keeps each request's (small, unary) body,
//! and when the answer is a rate limit it says so on stderr, waits as long
//! as it was told, and sends the request again, up to [`MAX_WAIT`] in all.
//!
//! Given the other replicas, it also moves on when the replica in use
//! answers `UNAVAILABLE` (a leader cut off from its peers, a follower that
//! reaches no leader) or the connection fails: it picks the next replica
//! that can serve and sends the same request there, each replica once.
//! Writes carry request ids, so a write that did commit before the error is
//! not applied twice. Every other answer passes through untouched. It also
//! puts the ACL token in use (if any) on every call.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::transport::Channel;

/// The longest the CLI waits, over all retries of one call, before it
/// gives the rate-limit error to the user.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A channel that retries calls the scheduler rate-limited, and calls a
/// replica could not serve on the next one.
#[derive(Clone, Debug)]
pub struct Backoff {
    inner: Channel,
    /// The replicas to move on to, shared by the clones of one client.
    replicas: Option<Arc<Failover>>,
}

/// Every replica given, and the one in use with its channel (which replaces
/// `inner`: a client that moved on stays moved).
#[derive(Debug)]
struct Failover {
    list: Vec<String>,
    current: std::sync::Mutex<(String, Channel)>,
}

impl Backoff {
    /// Retries rate-limited calls on `inner` only.
    pub fn new(inner: Channel) -> Backoff {
        Backoff {
            inner,
            replicas: None,
        }
    }

    /// Also moves on from `current` to another of `replicas`.
    pub fn with_failover(inner: Channel, replicas: Vec<String>, current: String) -> Backoff {
        Backoff {
            inner: inner.clone(),
            replicas: (replicas.len() > 1).then(|| {
                Arc::new(Failover {
                    list: replicas,
                    current: std::sync::Mutex::new((current, inner)),
                })
            }),
        }
    }
}

/// Why a call to a replica should be made at another: it answered
/// `UNAVAILABLE`, or could not be reached.
fn cannot_serve(res: &Result<http::Response<Body>, tonic::transport::Error>) -> Option<String> {
    match res {
        Err(e) => Some(drover_proto::pki::join::source_chain(e)),
        Ok(r) => match tonic::Status::from_header_map(r.headers()) {
            Some(s) if s.code() == tonic::Code::Unavailable => Some(s.message().to_string()),
            _ => None,
        },
    }
}

/// How long a rate-limited answer says to wait; `None` for any other answer.
fn retry_after(res: &http::Response<Body>) -> Option<Duration> {
    let h = res.headers();
    if h.get("grpc-status").map(|v| v.as_bytes()) != Some(b"8") {
        return None;
    }
    let ms: u64 = h.get("retry-after-ms")?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms.clamp(1, 10_000)))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<Body>> for Backoff {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let replicas = self.replicas.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if let Some(t) = crate::client::token() {
                if let Ok(v) = format!("Bearer {t}").parse() {
                    parts.headers.entry("authorization").or_insert(v);
                }
            }
            let bytes: Bytes = body.collect().await?.to_bytes();
            let make = |parts: &http::request::Parts| {
                let mut r = http::Request::new(Body::new(http_body_util::Full::new(bytes.clone())));
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = parts.uri.clone();
                *r.version_mut() = parts.version;
                *r.headers_mut() = parts.headers.clone();
                *r.extensions_mut() = parts.extensions.clone();
                r
            };
            let mut waited = Duration::ZERO;
            let mut tried = Vec::new();
            if let Some(r) = &replicas {
                let (addr, ch) = r.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tried.push(addr);
                inner = ch;
            }
            loop {
                let res = match tower::ServiceExt::ready(&mut inner).await {
                    Ok(_) => inner.call(make(&parts)).await,
                    Err(e) => Err(e),
                };
                if let (Some(why), Some(r)) = (cannot_serve(&res), &replicas) {
                    if tried.len() < r.list.len() {
                        if let Ok((next, ch)) = crate::client::pick(&r.list, &tried).await {
                            eprintln!(
                                "drover: {} cannot serve ({why}); trying {next}",
                                tried.last().map_or("the replica", |s| s.as_str())
                            );
                            *r.current.lock().unwrap_or_else(|e| e.into_inner()) =
                                (next.clone(), ch.clone());
                            tried.push(next);
                            inner = ch;
                            continue;
                        }
                    }
                }
                let res = res?;
                match retry_after(&res) {
                    Some(wait) if waited + wait <= MAX_WAIT => {
                        eprintln!(
                            "drover: the scheduler is rate-limiting this credential; retrying in {}ms",
                            wait.as_millis()
                        );
                        tokio::time::sleep(wait).await;
                        waited += wait;
                    }
                    _ => return Ok(res),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<&str>) -> Result<http::Response<Body>, tonic::transport::Error> {
        let mut r = http::Response::new(Body::empty());
        if let Some(code) = status {
            r.headers_mut()
                .insert("grpc-status", code.parse().expect("a header value"));
            r.headers_mut()
                .insert("grpc-message", "cut%20off".parse().expect("a header value"));
        }
        Ok(r)
    }

    #[test]
    fn only_unavailable_answers_move_on() {
        assert_eq!(
            cannot_serve(&answer(Some("14"))).as_deref(),
            Some("cut off")
        );
        // Rate limits are waited out on the same replica; refusals and
        // answers are the caller's.
        for code in ["0", "3", "7", "8", "16"] {
            assert_eq!(
                cannot_serve(&answer(Some(code))),
                None,
                "grpc-status {code}"
            );
        }
        // A stream's first answer carries no status yet.
        assert_eq!(cannot_serve(&answer(None)), None);
    }
}
