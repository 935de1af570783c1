//! The HTTP listener a daemon opens beside gRPC (`--http-listen`), never
//! instead of it: `/metrics` in Prometheus' text format, and whatever else
//! the daemon routes there.
//!
//! Metrics live in one [`Metrics`]: a prometheus-client registry that the
//! scheduler and the agent register into (in `drover dev` the same one, so
//! one scrape sees both), plus work to run before each scrape that sets
//! gauges from the daemon's state (a gauge of replicas by state is counted
//! when asked for, not kept up on every change).
//!
//! A caller is let in by the daemon's `Authorize` (the scheduler asks for
//! an ACL token that may read once the cluster has ACLs); a caller on
//! loopback is asked nothing, as `drover dev`'s browser and scrapers are
//! not, provided it names the host by address or as `localhost` (see
//! [`local_caller`]).

use prometheus_client::registry::{Metric, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Prometheus' text format: what every scraper and `promtool` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Refresh = Box<dyn Fn() + Send + Sync>;

/// A registry of metrics and what to refresh before a scrape.
#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    refresh: Mutex<Vec<Refresh>>,
    /// One scrape at a time: another's refresh would clear gauges this
    /// one is writing out.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            registry: Mutex::new(Registry::with_prefix("drover")),
            refresh: Mutex::default(),
            scraping: Mutex::default(),
        })
    }

    /// Registers `metric` as `drover_<name>` (a counter's samples end in
    /// `_total`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// Runs `f` before every scrape (to set gauges from current state).
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Every metric, refreshed, in Prometheus' text format.
    pub fn encode(&self) -> String {
        prometheus_text(&self.encode_openmetrics())
    }

    /// Every metric, refreshed, as prometheus-client writes it (OpenMetrics).
    fn encode_openmetrics(&self) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        for f in self
            .refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f();
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// OpenMetrics text as Prometheus' text format: a counter's family is
/// named as its samples are (`x_total`, where OpenMetrics says `x`), and
/// there is no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a request comes from this host and was meant for it: from a
/// loopback address, with a `Host` that is an IP address or `localhost`.
/// A page of another site that rebinds its name to 127.0.0.1 sends its own
/// name as `Host`, and is asked for a token like any remote caller.
pub fn local_caller(headers: &http::HeaderMap, from: SocketAddr) -> bool {
    if !from.ip().is_loopback() {
        return false;
    }
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        // HTTP/1.0 without a Host: no browser sends that.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether a request (its headers, from this address) may be served:
/// `Err` with why not.
pub type Authorize = Arc<dyn Fn(&http::HeaderMap, SocketAddr) -> Result<(), String> + Send + Sync>;

/// What a daemon serves besides `/metrics`.
#[derive(Default)]
pub struct Routes {
    /// Behind the same check as `/metrics`.
    pub authorized: axum::Router,
    /// To anyone (a page's own files, which hold no data).
    pub open: axum::Router,
}

/// Serves `/metrics` and `routes` on `listener` in a task of its own until
/// the returned sender is used or dropped; says so in the log if it fails.
pub fn start(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    authorize: Option<Authorize>,
    routes: Routes,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.await;
        };
        if let Err(e) = serve(listener, metrics, authorize, routes, stop).await {
            tracing::error!(error = %e, "http listener failed");
        }
    });
    stop
}

/// Serves `/metrics` (and `routes`) on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    authorize: Option<Authorize>,
    routes: Routes,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::{ConnectInfo, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl axum::response::IntoResponse {
        // Reading cgroups and locking state: off the runtime's threads.
        let body = tokio::task::spawn_blocking(move || metrics.encode())
            .await
            .unwrap_or_default();
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
    }

    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(metrics)
        .merge(routes.authorized);
    let app = match authorize {
        None => app,
        Some(authorize) => app.layer(axum::middleware::from_fn(
            move |ConnectInfo(from): ConnectInfo<SocketAddr>,
                  headers: HeaderMap,
                  req: axum::extract::Request,
                  next: axum::middleware::Next| {
                let verdict = if local_caller(&headers, from) {
                    Ok(())
                } else {
                    authorize(&headers, from)
                };
                async move {
                    match verdict {
                        Ok(()) => next.run(req).await,
                        Err(why) => (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            why + "\n",
                        )
                            .into_response(),
                    }
                }
            },
        )),
    };
    let app = app.merge(routes.open);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn only_a_loopback_caller_naming_this_host_by_address_is_local() {
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 40000);
        let host = |h: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::HOST, h.parse().unwrap());
            m
        };
        assert!(local_caller(&host("127.0.0.1:7480"), at("127.0.0.1")));
        assert!(local_caller(&host("localhost:7480"), at("127.0.0.1")));
        assert!(local_caller(&host("[::1]:7480"), at("::1")));
        assert!(local_caller(&http::HeaderMap::new(), at("127.0.0.1")));
        // DNS rebinding: another site's name pointed at loopback.
        assert!(!local_caller(&host("evil.example:7480"), at("127.0.0.1")));
        assert!(!local_caller(&host("127.0.0.1:7480"), at("10.0.0.5")));
    }

    #[test]
    fn a_scrape_refreshes_gauges_and_writes_every_metric() {
        let m = Metrics::new();
        let c: Counter = Counter::default();
        m.register("things", "Things done", c.clone());
        let g: Gauge = Gauge::default();
        m.register("level", "The level now", g.clone());
        let g2 = g.clone();
        m.on_scrape(move || {
            g2.set(7);
        });
        c.inc_by(3);
        let text = m.encode();
        assert!(
            text.contains("# HELP drover_things_total Things done."),
            "{text}"
        );
        assert!(
            text.contains("# TYPE drover_things_total counter"),
            "{text}"
        );
        assert!(text.contains("drover_things_total 3"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("drover_level 7"), "{text}");
    }
}
