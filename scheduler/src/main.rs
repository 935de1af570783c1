//! `drover-scheduler`: one peer of Drover's scheduler.

use clap::Parser;
use drover_scheduler::cluster::ClusterConfig;
use drover_scheduler::server::{Config, Scheduler};
use std::path::PathBuf;

/// One peer of Drover's Raft-replicated scheduler.
///
/// With --peers, a fresh data dir initializes a cluster of those peers
/// (give every peer the same list; initializing on each is harmless);
/// without, it bootstraps a one-peer cluster; with --join it waits to be
/// added by `drover cluster add`. A data dir from an earlier run rejoins with
/// everything it had.
///
/// Examples:
///   drover-scheduler --id 1 --listen 0.0.0.0:7400 --data-dir /var/lib/drover/scheduler
///   drover-scheduler --id 2 --listen 0.0.0.0:7400 --advertise 10.0.0.2:7400 \
///       --peers 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400 --data-dir /var/lib/drover/scheduler
///   drover-scheduler --id 4 --listen 0.0.0.0:7400 --advertise 10.0.0.4:7400 --join \
///       --join-token DRV1-scheduler-... --join-via 10.0.0.1:7400 \
///       --data-dir /var/lib/drover/scheduler    # then: drover cluster add 4 10.0.0.4:7400
///
/// Every connection is TLS with certificates of the cluster CA, kept in
/// --pki-dir (default <data-dir>/pki). A one-peer bootstrap makes the CA
/// itself, with the first administrator's credential (admin.pem, admin.key)
/// for `drover`. A cluster of several initial peers shares one CA: make
/// it once with `drover-scheduler ca init --pki-dir DIR` and copy DIR to
/// every peer's --pki-dir. A peer added later joins with a token
/// from `drover cluster join-token scheduler`.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// This peer's Raft id (unique in the cluster, not 0).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Address to serve the client API, node API and Raft on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: std::net::SocketAddr,
    /// Address others reach this peer at (default: the listen address).
    #[arg(long, default_value = "")]
    advertise: String,
    /// Serve Prometheus metrics over plain HTTP here (`/metrics`). Off by
    /// default. Once the cluster has ACLs, callers not on loopback need a
    /// token that may read (`Authorization: Bearer DRVT-...`).
    #[arg(long, env = "DROVER_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Where the Raft log, vote and snapshots live.
    #[arg(long, default_value = "/var/lib/drover/scheduler")]
    data_dir: PathBuf,
    /// The node timeout T. An agent whose last acknowledged heartbeat was
    /// sent T ago stops its replicas (jobs may opt out with `on_disconnect:
    /// keep-running`); the leader marks a node down and replaces its replicas
    /// T + 2s (the longest stop a fenced agent allows) + 1s (margin) after
    /// the node's last heartbeat, so a replica never runs on two nodes at
    /// once. Agents learn T from the scheduler.
    #[arg(long, default_value = "4s", env = "DROVER_NODE_TIMEOUT", value_parser = parse_duration)]
    node_timeout: std::time::Duration,
    /// Forget a node that has been down this long: its replicas (even those
    /// that keep running when cut off) are replaced and its subnet is free
    /// again. `0s` keeps down nodes until `drover node rm`.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    node_gc_after: std::time::Duration,
    /// Take a snapshot (and purge the log) every this many entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u64,
    /// The container address range; each node gets a /24 of it.
    #[arg(long, default_value = "10.88.0.0/16", env = "DROVER_CLUSTER_CIDR")]
    cluster_cidr: String,
    /// The initial peers of the cluster, as ID=HOST:PORT,... (this one included).
    #[arg(long, default_value = "", value_parser = parse_peers)]
    peers: Peers,
    /// Start without forming a cluster; wait to be added by `drover cluster add`.
    #[arg(long, conflicts_with = "peers")]
    join: bool,
    /// How often the leader heartbeats the other peers.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    raft_heartbeat: std::time::Duration,
    /// A peer that hears no leader for this (up to twice this) starts an election.
    #[arg(long, default_value = "150ms", value_parser = parse_duration)]
    election_timeout: std::time::Duration,
    /// Where the cluster CA and this peer's certificate live (default: <data-dir>/pki).
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// With --join: a token from `drover cluster join-token scheduler`, to
    /// get this peer's certificate and the CA (needed once; they are kept).
    #[arg(long, requires = "join_via", env = "DROVER_JOIN_TOKEN")]
    join_token: Option<String>,
    /// With --join-token: a peer of the cluster to join through (HOST:PORT).
    #[arg(long)]
    join_via: Option<String>,
    /// How long the certificates this peer signs are valid: its own,
    /// and those of agents and peers that join or renew through it.
    /// Holders renew two thirds into the life, so a stolen key is useful
    /// for this long at most. At least 30s (short lives are for tests).
    #[arg(long, default_value = "720h", value_parser = parse_cert_ttl)]
    cert_ttl: std::time::Duration,
    /// Requests a second each client or node may make (a token bucket per
    /// certificate; peers are not limited). Over it, calls are refused
    /// with RESOURCE_EXHAUSTED and how long to wait. 0: no limit.
    #[arg(long, default_value_t = 500)]
    rate_limit: u32,
    /// How many requests may come at once within the rate limit.
    #[arg(long, default_value_t = 1000)]
    rate_burst: u32,
    /// Serve and dial without TLS and without checking who calls: anyone who
    /// can reach the port controls the cluster. For debugging only.
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// The cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// For a cluster whose majority is gone for good: write what this
    /// stopped peer's data dir holds as a snapshot file, to restore into a
    /// new cluster with `drover operator snapshot restore`. Writes it knew
    /// committed are in it; with --include-uncommitted, also the entries
    /// after those (which the lost peers may or may not have committed).
    /// Anything the lost peers had and this one did not is lost.
    ///
    /// Example:
    ///   drover-scheduler recover --data-dir /var/lib/drover/scheduler --out /root/recovered.snap
    #[command(verbatim_doc_comment)]
    Recover {
        /// The stopped peer's data dir.
        #[arg(long, default_value = "/var/lib/drover/scheduler")]
        data_dir: PathBuf,
        /// Where to write the snapshot file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        include_uncommitted: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
enum CaCmd {
    /// Make a new cluster CA (and the first administrator's credential) in a
    /// directory, to copy to every initial peer's --pki-dir.
    ///
    /// Example:
    ///   drover-scheduler ca init --pki-dir /tmp/drover-pki
    #[command(verbatim_doc_comment)]
    Init {
        #[arg(long)]
        pki_dir: PathBuf,
    },
}

type Peers = std::collections::BTreeMap<u64, String>;

fn parse_peers(s: &str) -> Result<Peers, String> {
    drover_scheduler::cluster::parse_peers(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    drover_proto::quantity::Duration::parse(s).map(|d| d.std())
}

fn parse_cert_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(30) {
        return Err(format!("{s}: must be at least 30s"));
    }
    Ok(d)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    let a = Args::parse();
    let (from, to) = drover_proto::limits::raise_open_files();
    if to > from {
        tracing::info!(from, to, "raised the open-file limit");
    }
    if let Some(Sub::Ca(CaCmd::Init { pki_dir })) = &a.command {
        let ca = drover_scheduler::pki::init(pki_dir)?;
        println!(
            "cluster CA made in {} (fingerprint sha256:{}); copy the directory to every initial peer's --pki-dir",
            pki_dir.display(),
            ca.fingerprint()
        );
        return Ok(());
    }
    if let Some(Sub::Recover {
        data_dir,
        out,
        include_uncommitted,
    }) = &a.command
    {
        let e = drover_scheduler::raft::export::export(data_dir, *include_uncommitted).await?;
        std::fs::write(out, &e.file)?;
        println!(
            "wrote {} ({} bytes): the state at log index {} (snapshot {}, last committed known {}, last in the log {})",
            out.display(),
            e.file.len(),
            e.applied,
            e.snapshot_index,
            e.committed,
            e.last
        );
        if e.last > e.applied {
            println!(
                "left out {} entries after the last one known committed (--include-uncommitted takes them)",
                e.last - e.applied
            );
        }
        println!(
            "start a new cluster and run: drover operator snapshot restore {}",
            out.display()
        );
        return Ok(());
    }
    if a.id == 0 {
        anyhow::bail!("--id must not be 0");
    }
    // A full disk would stop the Raft log at its first write.
    let preflight = drover_scheduler::preflight(&a.data_dir);
    for c in preflight.warnings() {
        tracing::warn!(check = %c.name, found = %c.found, "preflight: {}", c.fix);
    }
    if !preflight.ok() {
        anyhow::bail!(preflight.refusal("drover-scheduler"));
    }
    // A newer release's data dir is refused before anything in it (its
    // credentials included) is read or made; opening the log records this one.
    drover_proto::format::check(
        &a.data_dir,
        drover_scheduler::raft::DATA_FORMAT,
        drover_scheduler::raft::DATA_VERSION,
        &drover_scheduler::raft::program(),
    )?;
    let pki_dir = a.pki_dir.clone().unwrap_or_else(|| a.data_dir.join("pki"));
    let pki = if a.insecure_plaintext {
        tracing::warn!("--insecure-plaintext: no TLS, no authorization; anyone who reaches the port controls the cluster");
        None
    } else if let (Some(token), Some(via), false) = (
        &a.join_token,
        &a.join_via,
        drover_proto::pki::ca::Ca::exists(&pki_dir),
    ) {
        Some(drover_scheduler::pki::Pki::join(&pki_dir, a.id, via, token, a.cert_ttl).await?)
    } else {
        let bootstrap = a.peers.is_empty() && !a.join;
        Some(drover_scheduler::pki::Pki::open_for(
            &pki_dir, a.id, bootstrap, a.cert_ttl,
        )?)
    };
    let rate_limits = (a.rate_limit > 0).then_some(drover_scheduler::server::limits::RateLimits {
        rate: a.rate_limit,
        burst: a.rate_burst.max(1),
    });
    // Bound before the peer starts: a port in use is said at once.
    let http = match a.http_listen {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--http-listen {addr}: {e}"))?,
            drover_proto::http::Metrics::new(),
        )),
        None => None,
    };
    let s = Scheduler::start(Config {
        metrics: http.as_ref().map(|(_, m)| m.clone()),
        pki,
        rate_limits,
        id: a.id,
        listen: a.listen,
        advertise: a.advertise,
        data_dir: a.data_dir,
        node_timeout: a.node_timeout,
        node_gc_after: Some(a.node_gc_after).filter(|d| !d.is_zero()),
        snapshot_every: a.snapshot_every,
        cluster_cidr: a.cluster_cidr,
        cluster: ClusterConfig {
            peers: a.peers,
            join: a.join,
            heartbeat: a.raft_heartbeat,
            election_timeout: a.election_timeout,
        },
    })
    .await?;
    println!("drover-scheduler {} serving on {}", a.id, s.local_addr);
    let http_stop = http.map(|(listener, metrics)| {
        let authorize = drover_scheduler::metrics::authorize(s.peer.clone());
        drover_proto::http::start(listener, metrics, Some(authorize), s.ui.routes())
    });
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        why = s.raft_failed() => Some(why),
    };
    if let Some(why) = failed {
        // Serving on would answer from a state that never moves again.
        tracing::error!(reason = %why, "raft stopped: this peer stops serving and exits");
        s.shutdown().await;
        anyhow::bail!("raft stopped: {why}");
    }
    tracing::info!("shutting down");
    drop(http_stop);
    s.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
