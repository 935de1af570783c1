//! The web UI and the read-only HTTP API under it, on the peer's HTTP
//! listener (`--http-listen`) beside `/metrics`.
//!
//! `/ui/` is a single page of plain HTML, CSS and JavaScript compiled into
//! the binary (no build step, nothing fetched at run time). It reads the
//! cluster from `/v1/...`: JSON documents that are the same ones
//! `drover ... -o json` prints (`drover_proto::json`), built from this
//! peer's applied state, so any peer serves the UI, a follower what it has
//! applied. Two answers stream as server-sent events: `/v1/events` (the
//! event stream of `drover events -f`, so the page changes as the cluster
//! does) and an allocation's logs, which the peer reads from the
//! allocation's agent with a ticket it signs itself.
//!
//! Callers are let in as `/metrics` lets them in (`drover_proto::http`):
//! anyone on loopback, else anyone until the cluster has ACLs, then a
//! token that may read (the page asks for one and sends it as a bearer
//! header). A token fenced to some jobs sees only those jobs, their
//! allocations and their events, as through the gRPC API; logs also need
//! the token's logs permission on the job. The page itself holds no data
//! and is served to anyone.

mod agents;
mod api;
mod stream;

use crate::cluster::Peer;
use crate::events::EventHub;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use drover_proto::pki::tls::{ClientTls, LiveTls};
use std::sync::Arc;

/// What the UI's handlers read from and talk to.
#[derive(Clone)]
pub struct Ui {
    pub(crate) peer: Peer,
    pub(crate) events: Arc<EventHub>,
    /// Signs tickets for agents (`None` without TLS: agents ask for none).
    pub(crate) tickets: Option<LiveTls>,
    /// How to dial an agent.
    pub(crate) agents: ClientTls,
    /// Ends every stream when the peer shuts down.
    pub(crate) stop: tokio::sync::broadcast::Sender<()>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").finish_non_exhaustive()
    }
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The page's own files, and no script or style from anywhere else.
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-cache"),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (k, v) in SECURITY_HEADERS {
        r.headers_mut()
            .insert(k, header::HeaderValue::from_static(v));
    }
    r
}

/// The jobs a caller may see: those whose names start with this (a token
/// fenced to some jobs; empty for everyone else, and for a local caller,
/// which is let in without a token).
#[derive(Debug)]
pub(crate) struct Scope(pub String);

impl Scope {
    pub(crate) fn sees(&self, job: &str) -> bool {
        job.starts_with(&self.0)
    }
}

impl axum::extract::FromRequestParts<Ui> for Scope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ui: &Ui,
    ) -> Result<Scope, Self::Rejection> {
        let from = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        if from.is_some_and(|f| drover_proto::http::local_caller(&parts.headers, f)) {
            return Ok(Scope(String::new()));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(crate::server::access::bearer);
        let state = ui.peer.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(Scope(
            match state.acl.authenticate(token, crate::clock::now_ms()) {
                Ok(Some(t)) => t.job_prefix.clone(),
                // No ACLs: everyone sees everything. A bad token never gets
                // here (the listener refused it); if it did, it would see
                // nothing.
                Ok(None) => String::new(),
                Err(_) => "\u{0}".into(),
            },
        ))
    }
}

impl Ui {
    /// The page (open to anyone) and the API (behind the listener's check).
    pub fn routes(&self) -> drover_proto::http::Routes {
        let open = axum::Router::new()
            .route("/", get(|| async { Redirect::to("/ui/") }))
            .route("/ui", get(|| async { Redirect::to("/ui/") }))
            .route(
                "/ui/",
                get(|| async { asset("text/html; charset=utf-8", INDEX) }),
            )
            .route(
                "/ui/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
            )
            .route(
                "/ui/app.css",
                get(|| async { asset("text/css; charset=utf-8", STYLE) }),
            );
        let authorized = axum::Router::new()
            .route("/v1/cluster", get(api::cluster))
            .route("/v1/jobs", get(api::jobs))
            .route("/v1/job/{name}", get(api::job))
            .route("/v1/job/{name}/usage", get(api::job_usage))
            .route("/v1/nodes", get(api::nodes))
            .route("/v1/node/{name}", get(api::node))
            .route("/v1/node/{name}/usage", get(api::node_usage))
            .route("/v1/allocation/{id}", get(api::allocation))
            .route("/v1/allocation/{id}/logs", get(stream::logs))
            .route("/v1/events", get(stream::events))
            .with_state(self.clone());
        drover_proto::http::Routes { authorized, open }
    }
}
