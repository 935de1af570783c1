//! `drover-bench`: Drover's benchmarks, each beside its peer where one
//! runs here (runc, Docker Swarm, etcd, skopeo) and printing a table; and
//! `figures`, which runs them all and writes the README's table. Kept out
//! of the product's binaries; `drover bench ...` runs this one.

mod attach;
mod cluster;
mod dns;
mod etcd;
mod events;
mod faults;
mod figures;
mod ha;
mod load;
mod node_loss;
mod pull;
mod rss;
mod runtime;
mod scale;
mod scrape;
mod snapshot;
mod stats;
mod swarm;
mod ui;
mod writes;

use clap::{Parser, Subcommand};
use drover_ctl::cli::CredentialArgs;
use drover_ctl::{client, config};
use std::path::PathBuf;

/// Drover's benchmarks, each beside its peer.
///
/// Examples:
///   examples/bench/figures.sh                       # every README figure, peers beside (root)
///   drover-bench runtime --runs 50                  # container starts vs runc (root)
///   drover-bench job-run --replicas 20,100          # against `drover dev`
///   drover-bench failover --trials 10               # leader killed -> first write
#[derive(Parser, Debug)]
#[command(name = "drover-bench", version, verbatim_doc_comment)]
struct Cli {
    /// Scheduler addresses, comma-separated (default: the context's, else
    /// 127.0.0.1:7400), for the benchmarks against a live cluster.
    #[arg(long, global = true, env = "DROVER_ADDR")]
    addr: Option<String>,
    /// The context of ~/.config/drover/config.yaml to use.
    #[arg(long, global = true, env = "DROVER_CONTEXT")]
    context: Option<String>,
    #[command(flatten)]
    credentials: CredentialArgs,
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Time `job run` of N replicas until all run (image cached), and print a table.
    ///
    /// Example (with `drover dev` running, from the repository root):
    ///   drover-bench job-run --replicas 20,100 --trials 5
    #[command(verbatim_doc_comment)]
    JobRun {
        /// Replica counts to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "20,100")]
        replicas: Vec<u32>,
        /// Runs per replica count.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// Time rolling updates of N replicas (no health gating; by default
    /// one at a time, start-first: Docker Swarm's settings) beside the
    /// strategy's lower bound, and print a table.
    ///
    /// Example (with `drover dev` running, from the repository root):
    ///   drover-bench rollout --replicas 10 --trials 5
    ///   drover-bench rollout --max-surge 0 --max-unavailable 1   # stop first
    ///   drover-bench rollout --max-surge 2 --max-unavailable 1
    #[command(verbatim_doc_comment)]
    Rollout {
        #[arg(long, default_value_t = 10)]
        replicas: u32,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// The update's max_surge.
        #[arg(long, default_value_t = 1)]
        max_surge: u32,
        /// The update's max_unavailable.
        #[arg(long, default_value_t = 0)]
        max_unavailable: u32,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// Send HTTP requests at a fixed rate and record every result per second:
    /// ok, failed, which version answered. Exits non-zero if any failed.
    ///
    /// Example:
    ///   drover-bench load --url http://127.0.0.1:18080/ --rate 250 --duration 30s --svg timeline.svg
    #[command(verbatim_doc_comment)]
    Load {
        /// Only http://host:port/path on loopback or the cluster's own addresses.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Stop after this long (or at Ctrl-C / SIGTERM).
        #[arg(long, default_value = "10m")]
        duration: String,
        /// Write the timeline as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the timeline as an SVG chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Throughput and latency through the routing mesh vs straight to one replica.
    ///
    /// Example:
    ///   drover-bench mesh --mesh http://127.0.0.1:18080/ --direct http://10.88.0.2:8080/
    #[command(verbatim_doc_comment)]
    Mesh {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        direct: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Time how long replicas of a lost node take to run elsewhere: starts its
    /// own scheduler and two agents, kills one agent, repeats; prints a table.
    ///
    /// Example (as root, from the repository root):
    ///   drover-bench node-loss --trials 5
    #[command(verbatim_doc_comment)]
    NodeLoss {
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[arg(long, default_value_t = 4)]
        replicas: u32,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// Kill the leader of 3 local peers, time the first write that succeeds;
    /// then the same with 3 etcd members, if etcd is installed.
    ///
    /// Starts three `drover-scheduler` processes on loopback (the binary next
    /// to this one), then per trial: SIGKILL the leader, retry a job
    /// submission through the CLI's client until it succeeds, restart the
    /// killed peer. Prints the median and max.
    ///
    /// Example:
    ///   drover-bench failover --trials 10
    ///   drover-bench failover --no-etcd
    #[command(verbatim_doc_comment)]
    Failover {
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// The peers' --election-timeout.
        #[arg(long, default_value = "150ms")]
        election_timeout: String,
        /// Skip etcd (it is measured only where `etcd` and `etcdctl` run).
        #[arg(long)]
        no_etcd: bool,
    },
    /// Durable commits per second of 3 in-process peers on loopback.
    ///
    /// Each commit is fsynced on a majority before it is acknowledged;
    /// concurrent proposals are batched into shared appends. Each proposer
    /// count runs no-ops, then job submissions (new versions of 1000 jobs),
    /// each for --seconds; failed writes and elections are reported.
    ///
    /// Example:
    ///   drover-bench commit --proposers 64,256 --seconds 3
    ///   drover-bench commit --security tls      # only over mutual TLS
    ///   # 10 minutes at full load: there should be no election
    ///   drover-bench commit --proposers 256 --seconds 300 --security tls
    #[command(verbatim_doc_comment)]
    Commit {
        /// Concurrent proposers to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
        proposers: Vec<usize>,
        /// How long to measure each.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Replication between the peers: tls, plaintext, or both
        /// (comma-separated; each on a fresh cluster, one after the other).
        #[arg(long, value_delimiter = ',', default_value = "tls,plaintext")]
        security: Vec<String>,
    },
    /// Durable writes per second as clients see them: three
    /// `drover-scheduler` peers as processes on loopback (mutual TLS), N
    /// clients over gRPC from this process, each submitting a new job version
    /// and waiting for its acknowledgement; then, if etcd is installed, three
    /// etcd members and `etcdctl check perf --load l` beside it (a minute,
    /// 500 clients: the 500-client run is the like-for-like one).
    ///
    /// Example:
    ///   drover-bench writes --clients 16,64,256,500 --seconds 10
    ///   drover-bench writes --no-etcd
    #[command(verbatim_doc_comment)]
    Writes {
        /// Concurrent clients to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "16,64,256,500")]
        clients: Vec<usize>,
        /// How long to measure each.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Skip etcd (it is measured only where `etcd` and `etcdctl` run).
        #[arg(long)]
        no_etcd: bool,
    },
    /// Snapshot save and restore: N jobs submitted to three peers, the
    /// state saved (timed, --trials times), then restored into a fresh
    /// three-peer cluster (timed) and every job and version checked.
    ///
    /// Example:
    ///   drover-bench snapshot --jobs 10000 --trials 5
    #[command(verbatim_doc_comment)]
    Snapshot {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 5)]
        trials: usize,
    },
    /// The scheduler at the size of a large cell: a real three-peer
    /// cluster (Raft, fsync, mutual TLS) and N simulated agents speaking
    /// the node API over gRPC (registering, heartbeating, watching, and
    /// reporting what they are given as running, with no containers).
    /// Prints placements/s, submit-to-placed time, one placement's latency
    /// while busy, the peers' memory and cpu, bytes sent to agents (while
    /// placing, idle, and to the others when one node is lost), the state
    /// on disk and a failover at that size; ends with `sustained: N
    /// placements/s`.
    ///
    /// Example:
    ///   drover-bench scale --nodes 10000 --jobs 1000 --replicas-per-job 100
    #[command(verbatim_doc_comment)]
    Scale {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        #[arg(long, default_value_t = 10)]
        replicas_per_job: u32,
        /// The peers' node timeout (default: 4s, or 2 ms per node past
        /// 2,000 nodes, as a large cluster would be run: 20s at 10,000).
        #[arg(long)]
        node_timeout: Option<String>,
        /// How often each simulated agent heartbeats (default: a quarter
        /// of the node timeout, at most 1s below 2,000 nodes).
        #[arg(long)]
        heartbeat: Option<String>,
    },
    /// The event stream: a writer submits jobs at --rate per second for
    /// --seconds, once with no subscriber and once with --subscribers
    /// following the leader's events, each on its own connection; prints
    /// the delivery latency (p50/p99/max) and the leader's cpu in each run.
    ///
    /// Example:
    ///   drover-bench events --subscribers 1000 --rate 100 --seconds 10
    #[command(verbatim_doc_comment)]
    Events {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Job submissions per second (each is about three events).
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// What mutual TLS adds to a new connection, beside plaintext: fresh
    /// connections to an in-process peer of each kind, one call each.
    ///
    /// Example:
    ///   drover-bench handshake --connections 500
    #[command(verbatim_doc_comment)]
    Handshake {
        #[arg(long, default_value_t = 300)]
        connections: usize,
    },
    /// Time container starts of Drover's runtime against `runc run` on the
    /// same bundle, interleaved; rows for direct starts, starts under a
    /// monitor process (`drover-agent monitor`, as the agent starts them)
    /// and runc.
    ///
    /// Example (as root):
    ///   drover-bench runtime --runs 50
    ///   drover-bench runtime --runs 50 --user-namespace
    #[command(verbatim_doc_comment)]
    Runtime(runtime::Args),
    /// What giving a container its network costs: the agent's attach
    /// (netlink) beside the same steps as `ip`/`nsenter ip` commands, on
    /// one bridge, alternating; each "container" a `unshare --net` process.
    ///
    /// Example (as root):
    ///   drover-bench attach --containers 50
    #[command(verbatim_doc_comment)]
    Attach {
        #[arg(long, default_value_t = 50)]
        containers: usize,
    },
    /// A Prometheus scrape of an agent with many allocations: a
    /// scheduler and an agent (--http-listen) as processes, N sleeping
    /// replicas, then --scrapes timed GETs of the agent's /metrics.
    ///
    /// Example (as root, from the repository root):
    ///   drover-bench metrics --allocations 1000
    #[command(verbatim_doc_comment)]
    Metrics {
        #[arg(long, default_value_t = 1000)]
        allocations: u32,
        #[arg(long, default_value_t = 200)]
        scrapes: usize,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// The web UI's first page with N jobs: a scheduler (--http-listen)
    /// and an agent as processes, N jobs of a sleeping replica, then
    /// headless Chromium loading /ui/ --loads times: time to every job
    /// shown, and bytes over the wire.
    ///
    /// Example (as root, from the repository root):
    ///   drover-bench ui --jobs 100
    #[command(verbatim_doc_comment)]
    Ui {
        #[arg(long, default_value_t = 100)]
        jobs: u32,
        #[arg(long, default_value_t = 20)]
        loads: usize,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// The node side's memory with N containers running: the agent (a
    /// process of its own, beside its own scheduler) and its per-container
    /// monitors, RSS and PSS.
    ///
    /// Example (as root, from the repository root):
    ///   drover-bench memory --containers 50
    #[command(verbatim_doc_comment)]
    Memory {
        #[arg(long, default_value_t = 50)]
        containers: u32,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
    },
    /// Faults at the leader of 3 peers in network namespaces (a
    /// `cluster.sh` cluster): killed, silent (every packet dropped, no
    /// resets), frozen (SIGSTOP), isolated from its peers; the time to the
    /// first write acknowledged through another peer.
    ///
    /// Example (as root, from the repository root):
    ///   drover-bench leader-faults --trials 10 --faults kill,silence,pause,isolate
    #[command(verbatim_doc_comment)]
    LeaderFaults {
        #[arg(long, default_value_t = 10)]
        trials: usize,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "kill,silence,pause,isolate"
        )]
        faults: Vec<String>,
    },
    /// Every figure the README shows, in one run on the current code, each
    /// beside its peer (runc; Docker Swarm from a dockerd of its own; etcd;
    /// skopeo and docker-registry), written into the README between its
    /// `figures:begin` and `figures:end` markers with the date, the commit,
    /// the machine and the peers' versions. About 35 minutes with the soak.
    /// `examples/bench/figures.sh` installs the peers, builds and runs this.
    ///
    /// Example (as root, from the repository root, after a release build):
    ///   drover-bench figures                          # writes README.md
    ///   drover-bench figures --dry-run --trials 3 --soak-seconds 0
    #[command(verbatim_doc_comment)]
    Figures(figures::Args),
    /// The node's DNS server from inside a container: each answer's round
    /// trip for a job's name, and how soon a frozen replica leaves the
    /// answers (demo-web replicas with a 500 ms HTTP check).
    ///
    /// Example (as root, with `drover dev` running, from the repository root):
    ///   drover-bench dns --queries 5000
    #[command(verbatim_doc_comment)]
    Dns {
        #[arg(long, default_value_t = 5000)]
        queries: usize,
        /// demo-web, or an image like it (HTTP 200 at /healthz on $PORT).
        #[arg(long, default_value = "oci:examples/images/out/demo-web:v1")]
        image: String,
    },
    /// Time pulling a registry image into a fresh layer cache against
    /// `skopeo copy` of it into an OCI layout.
    ///
    /// Example:
    ///   drover-bench pull 127.0.0.1:5000/demo-web:v1 --insecure-registry 127.0.0.1:5000
    #[command(verbatim_doc_comment)]
    Pull(pull::Args),
}

fn main() {
    let cli = Cli::parse();
    // Thousands of simulated agents' connections (`scale`).
    drover_proto::limits::raise_open_files();
    // Containers are cloned from this process: from a sealed in-memory copy
    // of this binary, as the agent does (CVE-2019-5736).
    if matches!(cli.command, BenchCmd::Runtime(_)) {
        // Found before the re-exec: after it this binary is a memfd.
        if let Some(agent) = runtime::agent_beside_this_binary() {
            std::env::set_var(runtime::AGENT_ENV, agent);
        }
        if let Err(e) = drover_agent::runtime::sealed_exe::reexec_sealed() {
            eprintln!("error: run from a sealed copy of drover-bench: {e}");
            std::process::exit(1);
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(mut cli: Cli) -> anyhow::Result<i32> {
    let ctx = config::Config::load(&config::path())?
        .pick(cli.context.as_deref())?
        .map(|(_, c)| c.clone());
    let (addr, credentials) = config::apply(cli.addr.take(), &cli.credentials, ctx.as_ref());
    client::set_credentials(&credentials);
    let addr = if addr.is_empty() {
        config::DEFAULT_ADDR.to_string()
    } else {
        addr
    };
    match cli.command {
        BenchCmd::JobRun {
            replicas,
            trials,
            image,
        } => cluster::job_run(&addr, &replicas, trials, &image).await,
        BenchCmd::Rollout {
            replicas,
            trials,
            max_surge,
            max_unavailable,
            image,
        } => {
            let strategy = cluster::Strategy {
                max_surge,
                max_unavailable,
            };
            cluster::rollout(&addr, replicas, trials, &image, strategy).await
        }
        BenchCmd::Load {
            url,
            rate,
            duration,
            json,
            svg,
        } => cluster::load_cmd(&url, rate, &duration, json, svg).await,
        BenchCmd::Mesh {
            mesh,
            direct,
            seconds,
            concurrency,
        } => cluster::mesh(&mesh, &direct, seconds, concurrency).await,
        BenchCmd::NodeLoss {
            trials,
            replicas,
            image,
        } => node_loss::node_loss(trials, replicas, &image).await,
        BenchCmd::Failover {
            trials,
            election_timeout,
            no_etcd,
        } => ha::failover(trials, &election_timeout, !no_etcd).await,
        BenchCmd::Commit {
            proposers,
            seconds,
            security,
        } => ha::commit(&proposers, seconds, &security).await,
        BenchCmd::Handshake { connections } => ha::handshake(connections).await,
        BenchCmd::Scale {
            nodes,
            jobs,
            replicas_per_job,
            node_timeout,
            heartbeat,
        } => {
            let parse =
                |flag: &str, v: Option<String>| -> anyhow::Result<Option<std::time::Duration>> {
                    v.map(|v| {
                        drover_proto::quantity::Duration::parse(&v)
                            .map(|d| d.std())
                            .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
                    })
                    .transpose()
                };
            let node_timeout = parse("node-timeout", node_timeout)?
                .unwrap_or_else(|| scale::node_timeout_for(nodes));
            let heartbeat = parse("heartbeat", heartbeat)?
                .unwrap_or_else(|| scale::heartbeat_for(nodes, node_timeout));
            scale::command(scale::Args {
                nodes,
                jobs,
                replicas_per_job,
                heartbeat,
                node_timeout,
            })
            .await
        }
        BenchCmd::Events {
            subscribers,
            rate,
            seconds,
        } => events::events(subscribers, rate, seconds).await,
        BenchCmd::Writes {
            clients,
            seconds,
            no_etcd,
        } => writes::writes(&clients, seconds, !no_etcd).await,
        BenchCmd::Snapshot { jobs, trials } => snapshot::command(jobs, trials).await,
        BenchCmd::Attach { containers } => attach::command(containers),
        BenchCmd::Memory { containers, image } => rss::command(containers, &image).await,
        BenchCmd::Metrics {
            allocations,
            scrapes,
            image,
        } => scrape::command(allocations, scrapes, &image).await,
        BenchCmd::Ui { jobs, loads, image } => ui::command(jobs, loads, &image).await,
        BenchCmd::LeaderFaults { trials, faults } => faults::command(&faults, trials).await,
        BenchCmd::Figures(args) => figures::command(args).await,
        BenchCmd::Runtime(args) => runtime::command(args),
        BenchCmd::Pull(args) => pull::command(args),
        BenchCmd::Dns { queries, image } => dns::command(&addr, &image, queries).await,
    }
}
