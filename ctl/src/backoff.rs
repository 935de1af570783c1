//! Backing off when the scheduler says "too many requests".
//!
//! A scheduler answers a caller over its rate limit with
//! `RESOURCE_EXHAUSTED` and a `retry-after-ms` before doing anything, so
//! the call can simply be made again. [`Backoff`] wraps the channel to the
//! scheduler and does that: it keeps each request's (small, unary) body,
//! and when the answer is a rate limit it says so on stderr, waits as long
//! as it was told, and sends the request again, up to [`MAX_WAIT`] in all.
//! Every other answer passes through untouched. It also puts the ACL token
//! in use (if any) on every call.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::transport::Channel;

/// The longest the CLI waits, over all retries of one call, before it
/// gives the rate-limit error to the user.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A channel that retries calls the scheduler rate-limited.
#[derive(Clone, Debug)]
pub struct Backoff {
    inner: Channel,
}

impl Backoff {
    pub fn new(inner: Channel) -> Backoff {
        Backoff { inner }
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
            loop {
                tower::ServiceExt::ready(&mut inner).await?;
                let res = inner.call(make(&parts)).await?;
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
