//! A tower layer that decides each call from its head — the method's path,
//! the headers, the connection's [`Peer`](drover_proto::pki::tls::Peer) in
//! the extensions — before the service sees it or reads a byte of its
//! body. The rate limit and the authorization layers are two such gates.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;

/// A decision on a call from its head: `Err` is the answer, and the call
/// goes no further.
pub trait Gate: Clone + Send + Sync + 'static {
    fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<(), Status>;
}

/// The layer putting gate `G` in front of a service.
#[derive(Clone, Debug)]
pub struct GateLayer<G>(pub G);

impl<S, G: Clone> tower::Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;
    fn layer(&self, inner: S) -> Gated<S, G> {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, G, B, R> tower::Service<http::Request<B>> for Gated<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    G: Gate,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Err(status) = self
            .gate
            .check(req.uri().path(), req.headers(), req.extensions())
        {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}
