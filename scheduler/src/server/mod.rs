//! A scheduler peer's process: Raft, the gRPC services, the controllers.
//!
//! One listener serves the client API, the node API and the Raft transport.
//! `Scheduler::start` brings it all up and `Scheduler::shutdown` stops it in
//! order (mini-redis style: a broadcast stop signal, then wait for every task).

pub mod access;
pub mod acl_api;
pub mod auth;
pub mod client_api;
pub mod cluster_api;
pub mod convert;
pub mod fanout;
pub mod gate;
pub mod join_api;
pub mod limits;
pub mod node_api;
pub mod observe;
mod peer_error;
mod refusal;

use crate::cluster::peer::Peer;
use crate::controller::Controller;
use crate::raft;
use drover_proto::pb;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct Config {
    pub id: u64,
    pub listen: SocketAddr,
    /// The address other peers and clients reach this one at.
    pub advertise: String,
    pub data_dir: PathBuf,
    pub node_timeout: Duration,
    /// Forget nodes down for longer than this (`None`: never).
    pub node_gc_after: Option<Duration>,
    pub snapshot_every: u64,
    /// Containers' addresses come from here: each node gets a /24 of it.
    pub cluster_cidr: String,
    /// Peers, joining, election timing (default: a one-peer cluster).
    pub cluster: crate::cluster::ClusterConfig,
    /// The cluster CA and this peer's certificate: every connection is
    /// TLS and every call is authorized. `None` only for
    /// `--insecure-plaintext`.
    pub pki: Option<crate::pki::Pki>,
    /// Per-caller request rates (`None`: unlimited).
    pub rate_limits: Option<limits::RateLimits>,
    /// Where this peer's metrics are registered (see `crate::metrics`);
    /// whoever serves `/metrics` holds it too. `None`: not measured.
    pub metrics: Option<std::sync::Arc<drover_proto::http::Metrics>>,
}

/// The longest a request may take to be answered (a stream: to start).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The most requests one connection may have in progress; more wait.
pub const CONCURRENCY_PER_CONNECTION: usize = 1024;
/// The largest request the client API accepts (Raft's carry snapshots and
/// may be larger).
pub const MAX_CLIENT_REQUEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("raft: {0}")]
    Raft(String),
    #[error("tls: {0}")]
    Tls(#[from] drover_proto::pki::PkiError),
    #[error("secrets key: {0}")]
    Secrets(#[from] crate::secrets::SealError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Scheduler {
    pub peer: Peer,
    /// The web UI and its API, for the HTTP listener.
    pub ui: crate::ui::Ui,
    pub local_addr: SocketAddr,
    stop: broadcast::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
    /// Why Raft stopped, once it has (see `cluster::lease`).
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    /// Kept for as long as the peer serves.
    _raft_runtime: std::sync::Arc<raft::RaftRuntime>,
}

/// Connections from the other scheduler peers (known by their
/// certificates), apart from everyone else's: Raft's RPCs and forwarded
/// writes are served on Raft's own runtime, so no burst of agents' or
/// clients' calls delays them. Without TLS nobody can be told apart, and
/// every connection is served with the others.
fn split_peers(
    incoming: drover_proto::pki::tls::Incoming,
) -> (
    drover_proto::pki::tls::Incoming,
    drover_proto::pki::tls::Incoming,
) {
    use tokio_stream::StreamExt;
    use tonic::transport::server::Connected;
    let (others_tx, others) = tokio::sync::mpsc::channel(64);
    let (peers_tx, peers) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(conn) = incoming.next().await {
            let from_peer = matches!(
                &conn,
                Ok(c) if matches!(c.connect_info().identity, Some(drover_proto::pki::Identity::Scheduler(_)))
            );
            let to = if from_peer { &peers_tx } else { &others_tx };
            // One server stopped (at shutdown): the other may still serve.
            let _ = to.send(conn).await;
            if peers_tx.is_closed() && others_tx.is_closed() {
                return;
            }
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(others),
        tokio_stream::wrappers::ReceiverStream::new(peers),
    )
}

impl Scheduler {
    /// Opens the peer's storage, starts Raft and serves. A fresh data dir
    /// initializes the cluster from the configured peers (or a one-member
    /// cluster without any, or nothing when joining); an existing one
    /// rejoins from disk.
    pub async fn start(config: Config) -> Result<Scheduler, ServerError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let advertise = if !config.advertise.is_empty() {
            config.advertise.clone()
        } else if let Some(peer) = config.cluster.peers.get(&config.id) {
            peer.clone()
        } else {
            local_addr.to_string()
        };
        let members = config
            .cluster
            .initial_members(config.id, &advertise)
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        use drover_proto::pki::{tls, SCHEDULER_NAME};
        let security = match &config.pki {
            Some(p) => tls::Security::Tls(p.tls.clone()),
            None => tls::Security::Plaintext,
        };
        let client_tls = tls::ClientTls::from_security(&security, SCHEDULER_NAME);
        let agent_tls = tls::ClientTls::from_security(&security, drover_proto::pki::AGENT_NAME);
        let raft_stats = raft::stats::RaftStats::default();
        let api_stats = observe::ApiStats::default();
        let scheduler_stats = crate::metrics::SchedulerStats::default();
        let opts = raft::RaftOptions {
            stats: raft_stats.clone(),
            tls: client_tls.clone(),
            snapshot_every: staggered(config.snapshot_every, config.id),
            heartbeat_interval: config.cluster.heartbeat,
            election_timeout_min: config.cluster.election_timeout,
            election_timeout_max: config.cluster.election_timeout * 2,
            ..Default::default()
        };
        let handle = raft::open(config.id, &config.data_dir, opts)
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        let raft_svc = raft::RaftServer::new(handle.raft.clone());
        // Beside the CA key (every peer's is the same), or in the data dir
        // of a peer without TLS.
        let secrets = std::sync::Arc::new(crate::secrets::SecretKey::load_or_make(
            config
                .pki
                .as_ref()
                .map_or(config.data_dir.as_path(), |p| p.dir()),
        )?);
        let (fatal_tx, fatal) = tokio::sync::watch::channel(None);
        let lease = crate::cluster::lease::Lease::track(
            &handle.raft,
            config.cluster.election_timeout * 2,
            fatal_tx,
        );
        let peer = Peer {
            lease,
            id: config.id,
            addr: advertise.clone(),
            raft: handle.raft.clone(),
            state: handle.state.clone(),
            applied: handle.applied.clone(),
            forwarder: std::sync::Arc::new(crate::cluster::forward::Forwarder::new(client_tls)),
            contact: raft_svc.contact(),
            follow_leader: true,
            batcher: crate::cluster::batch::Batcher::start(handle.raft.clone()),
        };
        let (stop, _) = broadcast::channel(1);
        let liveness = crate::controller::Liveness::default();
        let mut tasks = Vec::new();

        let max = 64 * 1024 * 1024;
        // HTTP/2 pings find a peer that vanished without a reset (a frozen
        // or unplugged host) in seconds rather than at the TCP timeout.
        let authority = config.pki.as_ref().map(|p| p.authority.clone());
        // Limits are per certificate: without TLS nobody can be told apart
        // (peers included, whose Raft traffic must never wait), so none.
        let rate_limit = config
            .rate_limits
            .filter(|_| config.pki.is_some())
            .map(|l| {
                let state = peer.state.clone();
                let known: limits::KnownToken = std::sync::Arc::new(move |token: &str| {
                    let s = state.read().ok()?;
                    let t = s
                        .acl
                        .authenticate(Some(token), crate::clock::now_ms())
                        .ok()??;
                    Some(t.accessor.clone())
                });
                limits::RateLimiter::with_tokens(l, Some(known))
            });
        if let Some(l) = rate_limit.clone() {
            let mut stop = stop.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => l.forget_idle(),
                        _ = stop.recv() => return,
                    }
                }
            }));
        }
        let desired = fanout::start(peer.clone(), secrets.clone());
        // Outermost first: the rate limit, then who may call what, and
        // only then the services. Built twice: one serves the other peers
        // on Raft's runtime, one everyone else.
        let router = || {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(crate::KEEPALIVE))
                .http2_keepalive_timeout(Some(crate::KEEPALIVE))
                .http2_max_header_list_size(64 << 10)
                .timeout(REQUEST_TIMEOUT)
                .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
                .layer(api_stats.clone())
                .layer(tower::util::option_layer(
                    rate_limit.clone().map(gate::GateLayer),
                ))
                .layer(tower::util::option_layer(
                    config
                        .pki
                        .as_ref()
                        .map(|_| gate::GateLayer(auth::Authorize)),
                ))
                .add_optional_service(config.pki.as_ref().map(|p| {
                    pb::join_server::JoinServer::new(join_api::JoinApi {
                        authority: p.authority.clone(),
                        cert_ttl: p.cert_ttl,
                        peer: peer.clone(),
                        secrets: secrets.clone(),
                    })
                }))
                .add_service(
                    pb::drover_server::DroverServer::new(client_api::ClientApi {
                        peer: peer.clone(),
                        signer: config.pki.as_ref().map(|p| p.tls.clone()),
                        secrets: secrets.clone(),
                        events: handle.events.clone(),
                        stop: stop.clone(),
                    })
                    .max_decoding_message_size(MAX_CLIENT_REQUEST),
                )
                .add_service(pb::acl_server::AclServer::new(acl_api::AclApi {
                    peer: peer.clone(),
                }))
                .add_service(pb::node_service_server::NodeServiceServer::new(
                    node_api::NodeApi {
                        peer: peer.clone(),
                        liveness: liveness.clone(),
                        node_timeout: config.node_timeout,
                        cluster_cidr: config.cluster_cidr.clone(),
                        authority: authority.clone(),
                        secrets: secrets.clone(),
                        desired: desired.clone(),
                    },
                ))
                .add_service(
                    pb::raft_service_server::RaftServiceServer::new(raft_svc.clone())
                        .max_decoding_message_size(max),
                )
                .add_service(
                    // A forwarded command may be a whole restored snapshot.
                    pb::cluster_server::ClusterServer::new(cluster_api::ClusterApi {
                        peer: peer.clone(),
                        authority: authority.clone(),
                        liveness: liveness.clone(),
                        secrets: secrets.clone(),
                    })
                    .max_decoding_message_size(max),
                )
        };
        let mut stop_rx = stop.subscribe();
        // Sockets wait for the network on Raft's runtime, whose threads are
        // seldom busy: a peer's append is seen at once however many agents'
        // calls the API's threads have in hand.
        let incoming =
            tls::incoming_on(listener, &security, &handle.runtime.handle()).map_err(|source| {
                ServerError::Listen {
                    addr: config.listen,
                    source,
                }
            })?;
        let (incoming, from_peers) = split_peers(incoming);
        {
            let router = router();
            let mut stop_rx = stop.subscribe();
            let raft_runtime = handle.runtime.handle();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop_rx.recv().await;
                };
                let served =
                    raft_runtime.spawn(router.serve_with_incoming_shutdown(from_peers, shutdown));
                match served.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "peer api server failed"),
                    // Raft's runtime shut down under it.
                    Err(e) => tracing::debug!(error = %e, "peer api server stopped"),
                }
            }));
        }
        let router = router();
        if let Some(p) = &config.pki {
            tasks.push(tokio::spawn(p.clone().keep_renewed(stop.subscribe())));
            tasks.push(tokio::spawn(follow_ca(
                p.clone(),
                peer.clone(),
                stop.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.recv().await;
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(error = %e, "api server failed");
            }
        }));

        if let Some(members) = members {
            let members = members
                .into_iter()
                .map(|(id, addr)| (id, raft::Node::new(addr)))
                .collect();
            raft::initialize(&handle.raft, members)
                .await
                .map_err(|e| ServerError::Raft(e.to_string()))?;
        }

        let controller = Controller {
            peer: peer.leader_only(),
            liveness,
            node_timeout: config.node_timeout,
            node_gc_after: config.node_gc_after,
            pass_seconds: scheduler_stats.pass_seconds.clone(),
        };
        tasks.push(tokio::spawn(controller.run(stop.subscribe())));
        if let Some(m) = &config.metrics {
            crate::metrics::register(m, &peer, &handle.events, &raft_stats, &scheduler_stats);
            api_stats.register(m);
            // Ends with Raft; not awaited at shutdown.
            tokio::spawn(crate::metrics::count_leader_changes(
                peer.clone(),
                scheduler_stats.leader_changes.clone(),
            ));
        }
        tracing::info!(id = config.id, addr = %local_addr, "scheduler peer serving");
        let ui = crate::ui::Ui {
            peer: peer.clone(),
            events: handle.events.clone(),
            tickets: config.pki.as_ref().map(|p| p.tls.clone()),
            agents: agent_tls,
            stop: stop.clone(),
        };
        Ok(Scheduler {
            ui,
            peer,
            local_addr,
            stop,
            tasks,
            fatal,
            _raft_runtime: handle.runtime.clone(),
        })
    }

    /// Resolves, with the reason, if Raft stops while the peer serves (a
    /// log write failed, say). The process must then stop serving and exit:
    /// its state will never move again.
    pub async fn raft_failed(&self) -> String {
        let mut fatal = self.fatal.clone();
        let why = match fatal.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "raft core stopped".into(),
        };
        why
    }

    /// Stops serving, stops the controllers, then shuts Raft down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.peer.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Keeps this peer's CA, trust and certificate where the replicated
/// CA rotation says they are (see `crate::state::ca`), from the moment a
/// phase is applied.
async fn follow_ca(pki: crate::pki::Pki, peer: Peer, mut stop: broadcast::Receiver<()>) {
    let mut applied = peer.applied.clone();
    let mut followed = None;
    loop {
        let rotation = peer
            .state
            .read()
            .expect("state lock poisoned")
            .ca_rotation
            .clone();
        if let Some(r) = rotation {
            let key = (r.phase, r.new_subject.clone());
            if followed.as_ref() != Some(&key) {
                match pki.follow(&r) {
                    Ok(_) => followed = Some(key),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot follow the CA rotation; retrying")
                    }
                }
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.recv() => return,
        }
    }
}

/// Peer `id`'s snapshot interval: `every` plus an eighth of it per id
/// (mod 4), so that peers which apply the same log do not all serialise
/// their state at the same moment (measured: three 37 MB snapshots at
/// once on 2 cores coincided with an election under full load).
fn staggered(every: u64, id: u64) -> u64 {
    every + every / 8 * (id % 4)
}
