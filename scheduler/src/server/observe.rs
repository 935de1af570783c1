//! A tower layer that counts every call the server answers: by method and
//! gRPC code, with its latency, and the calls refused by the rate limit.
//!
//! It sits outermost, so refusals by the rate limit and by authorization
//! count too. A call's code is read from the response's head: a refused or
//! failed unary call is answered "trailers only", its status in the head;
//! a call that succeeds has none there (OK), and a stream is counted by how
//! it began.

use crate::raft::stats::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the layer counts.
#[derive(Clone, Debug)]
pub struct ApiStats {
    pub requests: Family<Labels, Counter>,
    pub seconds: Family<Labels, Histogram>,
    pub rate_limited: Counter,
    /// The method labels in use, at most [`METHODS`].
    methods: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// The most method labels kept: more than Drover's services have, so a
/// caller sending made-up paths cannot grow the metrics at will.
const METHODS: usize = 256;
/// Drover's services: a path naming another is `other`.
const SERVICES: &[&str] = &[
    "Drover",
    "NodeService",
    "RaftService",
    "AgentApi",
    "Cluster",
    "Acl",
    "Join",
];

impl Default for ApiStats {
    fn default() -> Self {
        ApiStats {
            requests: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new(crate::raft::stats::latency_buckets())
            }),
            rate_limited: Counter::default(),
            methods: Default::default(),
        }
    }
}

impl ApiStats {
    pub fn register(&self, m: &drover_proto::http::Metrics) {
        m.register(
            "api_requests",
            "Calls answered, by method and gRPC code",
            self.requests.clone(),
        );
        m.register(
            "api_request_seconds",
            "How long calls took to answer (a stream: to begin), by method",
            self.seconds.clone(),
        );
        m.register(
            "api_rate_limited",
            "Calls refused for going over their caller's rate",
            self.rate_limited.clone(),
        );
    }
}

impl<S> tower::Layer<S> for ApiStats {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            stats: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    stats: ApiStats,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `/drover.v1.Drover/SubmitJob` as `Drover/SubmitJob`.
fn method(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, call)) => {
            let service = service.rsplit('.').next().unwrap_or(service);
            format!("{service}/{call}")
        }
        None => path.to_string(),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method(req.uri().path());
        let stats = self.stats.clone();
        let began = std::time::Instant::now();
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let answer = inner.call(req).await;
            let code = match &answer {
                Ok(r) => {
                    if r.headers().contains_key(super::limits::RETRY_AFTER) {
                        stats.rate_limited.inc();
                    }
                    let code = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    format!("{:?}", tonic::Code::from(code)).to_lowercase()
                }
                Err(_) => "transport".to_string(),
            };
            // A method that does not exist is one label, whatever its
            // name: callers must not grow the metrics at will.
            let known = code != "unimplemented"
                && method
                    .split_once('/')
                    .is_some_and(|(service, _)| SERVICES.contains(&service))
                && {
                    let mut seen = stats.methods.lock().unwrap_or_else(|p| p.into_inner());
                    seen.contains(&method) || (seen.len() < METHODS && seen.insert(method.clone()))
                };
            let method = if known { method } else { "other".to_string() };
            let labels = vec![("method".to_string(), method)];
            stats
                .seconds
                .get_or_create(&labels)
                .observe(began.elapsed().as_secs_f64());
            let mut labels = labels;
            labels.push(("code".to_string(), code));
            stats.requests.get_or_create(&labels).inc();
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_method_is_named_by_its_service_and_call() {
        assert_eq!(
            super::method("/drover.v1.Drover/SubmitJob"),
            "Drover/SubmitJob"
        );
        assert_eq!(super::method("/health"), "health");
    }
}
