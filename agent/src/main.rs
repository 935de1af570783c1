//! `drover-agent`: the node agent binary. Argument parsing and wiring only;
//! the work is in the `drover_agent` library.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover_agent::cgroups;
use drover_agent::runtime::{Runtime, Stdio};

#[derive(Debug, Parser)]
#[command(
    name = "drover-agent",
    version,
    about = "Drover's node agent and container runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: register this node with the scheduler and run the
    /// allocations it places here.
    ///
    /// SIGTERM (restart, upgrade) leaves the containers running; the next
    /// agent started with the same --state-dir re-adopts them. SIGINT
    /// (Ctrl-C) stops every container first.
    ///
    /// Example:
    ///   drover-agent run --name node-1 --scheduler 10.0.0.1:7400,10.0.0.2:7400 \
    ///       --join "$(drover cluster join-token agent)" --volume data=/srv/data
    #[command(verbatim_doc_comment)]
    Run(Box<DaemonArgs>),
    /// List or remove what agents that no longer run left on this machine.
    ///
    /// An agent killed with SIGKILL, or a crashed `drover dev`, leaves its
    /// containers running (with their overlay mounts, cgroups, addresses and
    /// veths) and its bridge in place. A state dir whose lock no running
    /// agent holds is fair game: its containers are orphans, and its links
    /// (marked `drover:<state-dir>`) are stale. State dirs a running agent
    /// holds are never touched. Without --state-dir, the state dirs are found
    /// from link markers, running monitors, overlay mounts and the default
    /// state dir. Exits non-zero when something could not be removed.
    ///
    /// Example:
    ///   drover-agent cleanup --dry-run
    ///   drover-agent cleanup --state-dir /var/lib/drover/agent
    #[command(verbatim_doc_comment)]
    Cleanup {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Look only at this agent state dir. Repeatable.
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: Vec<PathBuf>,
        /// The cgroup root the agents ran containers under.
        #[arg(long, default_value = "/sys/fs/cgroup", env = "DROVER_CGROUP_ROOT")]
        cgroup_root: PathBuf,
        /// Then remove the --state-dir directories too (images, logs,
        /// certificates): everything the agent made on the machine is gone.
        #[arg(long, requires = "state_dir")]
        remove_state: bool,
    },
    /// Low-level container runtime commands (OCI bundles).
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Internal: the per-container monitor the agent starts (see
    /// `drover_agent::runtime::monitor`).
    #[command(hide = true)]
    Monitor(drover_agent::runtime::monitor::MonitorArgs),
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Run a bundle in the foreground, like `runc run`; exits with its status.
    Run {
        #[arg(long, short)]
        bundle: PathBuf,
        id: String,
        #[arg(long, default_value = "/sys/fs/cgroup", env = "DROVER_CGROUP_ROOT")]
        cgroup_root: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// This node's name (a DNS-1123 label).
    #[arg(long)]
    name: String,
    /// Scheduler replica addresses, comma-separated.
    #[arg(
        long,
        env = "DROVER_ADDR",
        default_value = "127.0.0.1:7400",
        value_delimiter = ','
    )]
    scheduler: Vec<String>,
    /// Where this agent's API (logs, exec) listens. Default: port 7401 on
    /// the node's cluster address, the one it reaches the first
    /// --scheduler from (not every address: containers and other networks
    /// have no business there).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The address clients reach this agent's API at (default: the listen address).
    #[arg(long, default_value = "")]
    advertise: String,
    /// Serve Prometheus metrics over plain HTTP here (`/metrics`): its
    /// containers by state, starts, restarts, OOM kills, image pulls, each
    /// allocation's cpu, memory and processes, the routing mesh's
    /// connections. Off by default; keep it on a private address.
    #[arg(long, env = "DROVER_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Bundles, logs and the image cache.
    #[arg(long, default_value = "/var/lib/drover/agent")]
    state_dir: PathBuf,
    #[arg(long, default_value = "/sys/fs/cgroup", env = "DROVER_CGROUP_ROOT")]
    cgroup_root: PathBuf,
    /// Cpu this node offers, in cores (default: detected).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory this node offers, e.g. 8Gi (default: detected).
    #[arg(long)]
    memory: Option<String>,
    /// Cpu kept back for the system (the OS, this agent), in cores, e.g.
    /// 500m: the node offers the scheduler its cpu less this.
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Memory kept back for the system, e.g. 512Mi: the node offers the
    /// scheduler its memory less this.
    #[arg(long)]
    reserve_memory: Option<String>,
    /// How often to tell the scheduler this node is alive.
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// Rotate a container's log when it would exceed this size (one older
    /// generation is kept).
    #[arg(long, default_value = "10Mi")]
    log_max_size: String,
    /// A registry (`HOST` or `HOST:PORT`, as in image references) reached
    /// over plain HTTP instead of HTTPS. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Credentials for a registry, `HOST=USER:PASSWORD`; used as basic auth
    /// and to obtain bearer tokens. Repeatable. Also read one per line from
    /// the file named by --registry-auth-file.
    #[arg(long = "registry-auth", value_name = "HOST=USER:PASSWORD")]
    registry_auth: Vec<String>,
    /// A file of `HOST=USER:PASSWORD` lines (blank lines and `#` comments
    /// ignored), so passwords stay out of the process list.
    #[arg(long, value_name = "PATH")]
    registry_auth_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for registries over HTTPS,
    /// beside the public web roots (a registry with a private CA).
    /// Repeatable.
    #[arg(long = "registry-ca", value_name = "PATH")]
    registry_ca: Vec<PathBuf>,
    /// Where images named without a registry (`nginx:1.27`,
    /// `library/nginx`, `myorg/app`) come from.
    #[arg(long, default_value = "docker.io", value_name = "HOST[:PORT]")]
    default_registry: String,
    /// A registry asked first for images named without one (a pull-through
    /// cache of the default registry); the next, then the default
    /// registry, when it fails. Repeatable.
    #[arg(long = "registry-mirror", value_name = "HOST[:PORT]")]
    registry_mirror: Vec<String>,
    /// A Docker client config whose `auths`, `credHelpers` and `credsStore`
    /// give registry logins (default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json, when there is one). --registry-auth wins.
    #[arg(long, value_name = "PATH")]
    docker_config: Option<PathBuf>,
    /// A host (`HOST` or `HOST:PORT`) that may receive a registry's
    /// credentials as its bearer-token realm, beside the registry's own host
    /// (e.g. auth.docker.io). Credentials go to a realm only over HTTPS.
    /// Repeatable.
    #[arg(long = "registry-token-host", value_name = "HOST[:PORT]")]
    registry_token_host: Vec<String>,
    /// Refuse an image layer larger than this once uncompressed (a
    /// decompression bomb stops here, not when the disk is full).
    #[arg(long, default_value = "10Gi")]
    max_layer_size: String,
    /// Refuse an image whose layers add up to more than this uncompressed.
    #[arg(long, default_value = "20Gi")]
    max_image_size: String,
    /// The pids limit of a container whose job sets none, so that no fork
    /// bomb exhausts the node's pids (0: no limit).
    #[arg(long, default_value_t = drover_agent::runtime::DEFAULT_PIDS_LIMIT as u64)]
    default_pids_limit: u64,
    /// How long the log (and any leftover bundle) of an allocation that
    /// ended stays on disk, for `drover logs`.
    #[arg(long, default_value = "1h")]
    ended_retention: String,
    /// Run every private-network replica in a user namespace of its own
    /// (container root is an unprivileged host id), unless its job sets
    /// `security.user_namespace: false`.
    #[arg(long)]
    user_namespaces: bool,
    /// A host directory jobs may mount by name (Nomad's host volumes):
    /// `NAME=PATH`, or `NAME=PATH:ro` to offer it read-only. Jobs say
    /// `volumes: [{name: NAME, path: /in/container}]` and are placed only
    /// on nodes that offer it; no job names a host path. Repeatable.
    #[arg(long = "volume", value_name = "NAME=PATH[:ro]")]
    volumes: Vec<String>,
    /// A label for jobs' constraints to match: `KEY=VALUE`, e.g.
    /// `--label zone=eu-1a --label disk=ssd`; a job with
    /// `constraints: [{attr: zone, op: in, values: [eu-1a]}]` runs only on
    /// nodes labelled so. `drover node label` changes them at runtime.
    /// Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A token from `drover cluster join-token agent`: the first start uses
    /// it to get this node's certificate (kept in <state-dir>/pki).
    #[arg(long, env = "DROVER_JOIN_TOKEN")]
    join: Option<String>,
    /// Dial the schedulers and serve this node's API without TLS or any
    /// check of who calls. For debugging only; the schedulers must run
    /// with it too.
    #[arg(long)]
    insecure_plaintext: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // What clones containers runs from a sealed in-memory copy of this
    // binary, never from the file on the host (CVE-2019-5736).
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Monitor(_)
            | Command::Runtime {
                command: RuntimeCommand::Run { .. }
            }
    ) {
        drover_agent::runtime::sealed_exe::reexec_sealed()
            .context("run from a sealed copy of drover-agent")?;
    }
    match cli.command {
        Command::Run(args) => daemon(*args),
        Command::Runtime { command } => runtime(command),
        Command::Cleanup {
            dry_run,
            state_dir,
            cgroup_root,
            remove_state,
        } => cleanup(dry_run, state_dir, cgroup_root, remove_state),
        Command::Monitor(args) => Ok(ExitCode::from(args.run() as u8)),
    }
}

fn daemon(a: DaemonArgs) -> anyhow::Result<ExitCode> {
    use drover_proto::quantity;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .init();
    let (from, to) = drover_proto::limits::raise_open_files();
    if to > from {
        tracing::info!(from, to, "raised the open-file limit");
    }
    drover_proto::spec::dns_label(&a.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    // What the node lacks stops it here, with what to do, rather than as a
    // confusing error at the first container.
    let preflight = drover_agent::preflight::node(&a.state_dir, &a.cgroup_root);
    for c in preflight.warnings() {
        tracing::warn!(check = %c.name, found = %c.found, "preflight: {}", c.fix);
    }
    if !preflight.ok() {
        anyhow::bail!(preflight.refusal("drover-agent"));
    }
    // A newer release's state directory is refused before anything in it
    // (its credentials included) is read; `Agent::start` records this one.
    drover_proto::format::check(
        &a.state_dir,
        drover_agent::daemon::STATE_FORMAT,
        drover_agent::daemon::STATE_VERSION,
        &drover_agent::daemon::program(),
    )?;
    let cpu_millis = a
        .cpu
        .map(|c| quantity::Cpu::parse(&c).map(|c| c.millis()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--cpu: {e}"))?;
    let memory_bytes = a
        .memory
        .map(|m| quantity::Size::parse(&m).map(|m| m.bytes()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--memory: {e}"))?;
    let reserved_cpu_millis = a
        .reserve_cpu
        .map(|c| quantity::Cpu::parse(&c).map(|c| c.millis()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--reserve-cpu: {e}"))?
        .unwrap_or(0);
    let reserved_memory_bytes = a
        .reserve_memory
        .map(|m| quantity::Size::parse(&m).map(|m| m.bytes()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--reserve-memory: {e}"))?
        .unwrap_or(0);
    let heartbeat = quantity::Duration::parse(&a.heartbeat)
        .map_err(|e| anyhow::anyhow!("--heartbeat: {e}"))?
        .std();
    let log_max_bytes = quantity::Size::parse(&a.log_max_size)
        .map_err(|e| anyhow::anyhow!("--log-max-size: {e}"))?
        .bytes();
    let resource_defaults =
        drover_agent::runtime::ResourceDefaults::with_pids(a.default_pids_limit);
    let ended_retention = quantity::Duration::parse(&a.ended_retention)
        .map_err(|e| anyhow::anyhow!("--ended-retention: {e}"))?
        .std();
    let monitor = drover_agent::runtime::MonitorConfig {
        // The sealed copy this process runs from (see main).
        exe: PathBuf::from("/proc/self/exe"),
        cgroup_root: a.cgroup_root.clone(),
        log_max_bytes,
        defaults: resource_defaults,
    };
    let mut registries = drover_agent::image::RegistryConfig {
        insecure: a.insecure_registry.into_iter().collect(),
        token_hosts: a.registry_token_host.into_iter().collect(),
        default_registry: a.default_registry.clone(),
        mirrors: a.registry_mirror.clone(),
        ..Default::default()
    };
    for path in &a.registry_ca {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--registry-ca {}", path.display()))?;
        registries
            .trust_ca_pem(&pem)
            .map_err(|e| anyhow::anyhow!("--registry-ca {}: {e}", path.display()))?;
    }
    let mut auth_lines = a.registry_auth;
    if let Some(path) = &a.registry_auth_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--registry-auth-file {}", path.display()))?;
        auth_lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    for line in &auth_lines {
        let (host, creds) = drover_agent::image::RegistryConfig::parse_auth(line)
            .map_err(|e| anyhow::anyhow!("--registry-auth: {e}"))?;
        registries.credentials.insert(host, creds);
    }
    // After the flags: their credentials win.
    let docker_config = a.docker_config.clone().or_else(|| {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
        Some(dir.join("config.json")).filter(|p| p.exists())
    });
    if let Some(path) = &docker_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--docker-config {}", path.display()))?;
        registries
            .load_docker_config(&text)
            .map_err(|e| anyhow::anyhow!("--docker-config {}: {e}", path.display()))?;
    }
    let size = |flag: &str, v: &str| {
        quantity::Size::parse(v)
            .map(|s| s.bytes())
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    };
    let image_limits = drover_agent::image::ImageLimits {
        max_layer_bytes: size("--max-layer-size", &a.max_layer_size)?,
        max_image_bytes: size("--max-image-size", &a.max_image_size)?,
    };
    let volumes = drover_agent::daemon::HostVolume::parse_all(&a.volumes, &a.state_dir)
        .map_err(|e| anyhow::anyhow!("--volume {e}"))?;
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        match drover_proto::spec::constraint::parse_label(l) {
            Ok((k, Some(v))) => {
                labels.insert(k, v);
            }
            Ok((_, None)) => anyhow::bail!("--label {l:?}: give KEY=VALUE"),
            Err(e) => anyhow::bail!("--label {e}"),
        }
    }
    let config = drover_agent::daemon::Config {
        volumes,
        labels,
        user_namespaces: a.user_namespaces,
        image_limits,
        resource_defaults,
        ended_retention,
        monitor: Some(monitor),
        name: a.name,
        listen: match a.listen {
            Some(l) => l,
            None => {
                let ip = drover_agent::daemon::cluster_address(&a.scheduler).ok_or_else(|| {
                    anyhow::anyhow!(
                        "cannot tell this node's cluster address from --scheduler {}: give --listen",
                        a.scheduler.join(",")
                    )
                })?;
                std::net::SocketAddr::new(ip, 7401)
            }
        },
        schedulers: a.scheduler,
        advertise: a.advertise,
        state_dir: a.state_dir,
        cgroup_root: a.cgroup_root,
        cpu_millis,
        memory_bytes,
        reserved_cpu_millis,
        reserved_memory_bytes,
        heartbeat,
        registries,
        security: drover_proto::pki::tls::Security::Plaintext,
        metrics: a.http_listen.map(|_| drover_proto::http::Metrics::new()),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut config = config;
        if !a.insecure_plaintext {
            let m = drover_agent::pki::prepare(
                &config.state_dir,
                &config.name,
                &config.schedulers,
                a.join.as_deref(),
            )
            .await?;
            config.security =
                drover_proto::pki::tls::Security::Tls(drover_proto::pki::tls::LiveTls::new(m)?);
        } else {
            tracing::warn!("--insecure-plaintext: no TLS; anyone who reaches this node's API can read its logs and exec into its containers");
        }
        // Bound before the agent starts: a port in use is said at once.
        let http = match (a.http_listen, config.metrics.clone()) {
            (Some(addr), Some(m)) => Some((
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("--http-listen {addr}: {e}"))?,
                m,
            )),
            _ => None,
        };
        let agent = drover_agent::daemon::Agent::start(config).await?;
        println!("drover-agent serving on {}", agent.local_addr);
        // Serves until the process ends.
        let _http = http.map(|(listener, metrics)| drover_proto::http::start(listener, metrics, None, Default::default()));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: stopping containers and exiting");
                agent.shutdown().await;
            }
            _ = term.recv() => {
                // Restart or upgrade: containers keep running under their
                // monitors and the next agent process re-adopts them.
                tracing::info!("terminated: leaving containers running and exiting");
                std::process::exit(0);
            }
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}

fn cleanup(
    dry_run: bool,
    dirs: Vec<PathBuf>,
    cgroup_root: PathBuf,
    remove_state: bool,
) -> anyhow::Result<ExitCode> {
    use drover_agent::leftovers::cleanup;
    let dirs = if dirs.is_empty() {
        cleanup::discover()
    } else {
        dirs
    };
    let cgroups = cgroups::manager_for(cgroup_root);
    let found = cleanup::scan(&dirs, cgroups.as_ref());
    print!("{found}");
    if dry_run {
        if remove_state {
            for d in &dirs {
                println!("would remove {}", d.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut errors = found.remove(cgroups.as_ref());
    if remove_state && errors.is_empty() {
        for d in &dirs {
            match cleanup::remove_state_dir(d) {
                Ok(()) => println!("removed {}", d.display()),
                Err(e) => errors.push(e),
            }
        }
    }
    if found.is_empty() && errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if errors.is_empty() {
        println!(
            "removed {} container(s) and {} link(s)",
            found.orphans.len(),
            found.links.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

fn runtime(command: RuntimeCommand) -> anyhow::Result<ExitCode> {
    match command {
        RuntimeCommand::Run {
            bundle,
            id,
            cgroup_root,
        } => {
            let runtime = Runtime::new(cgroups::manager_for(cgroup_root));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(run_foreground(&runtime, bundle, &id))?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

/// Starts the container with our stdout/stderr, forwards SIGINT/SIGTERM to
/// it, and removes its cgroup once it has exited.
async fn run_foreground(runtime: &Runtime, bundle: PathBuf, id: &str) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let stdio = Stdio {
        stdout: std::io::stdout().as_fd().try_clone_to_owned()?,
        stderr: std::io::stderr().as_fd().try_clone_to_owned()?,
    };
    let container = runtime
        .start_with_stdio(&bundle, id, stdio)
        .with_context(|| format!("start {id} from {}", bundle.display()))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            s = container.wait() => break s?,
            _ = term.recv() => container.kill(nix::sys::signal::Signal::SIGTERM)?,
            _ = int.recv() => container.kill(nix::sys::signal::Signal::SIGINT)?,
        }
    };
    container.stop(Duration::ZERO).await?;
    Ok(status.code())
}
