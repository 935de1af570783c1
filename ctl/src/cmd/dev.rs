//! `drover dev`: a one-replica scheduler and an agent in this process.

use crate::cli::DevArgs;
use anyhow::{Context, Result};
use drover_agent::daemon::{Agent, Config as AgentConfig};
use drover_scheduler::server::{Config as SchedulerConfig, Scheduler};
use std::path::PathBuf;
use std::time::Duration;

pub async fn run(a: DevArgs) -> Result<i32> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,h2=warn,tower=warn".into()),
        )
        .init();
    let (from, to) = drover_proto::limits::raise_open_files();
    if to > from {
        tracing::info!(from, to, "raised the open-file limit");
    }
    if a.cleanup {
        return cleanup(&a.state_dir, &a.cgroup_root);
    }
    // What the machine lacks stops it here, with what to do.
    let preflight = drover_agent::preflight::node(&a.state_dir, &a.cgroup_root);
    for c in preflight.warnings() {
        tracing::warn!(check = %c.name, found = %c.found, "preflight: {}", c.fix);
    }
    if !preflight.ok() {
        anyhow::bail!(preflight.refusal("drover dev"));
    }
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("cannot create {}", a.state_dir.display()))?;
    // One CA for the scheduler, the node and the CLI, all in <state>/pki
    // (where `drover` looks for a local drover dev's credentials).
    let pki_dir = a.state_dir.join("pki");
    let pki = drover_scheduler::pki::Pki::open(&pki_dir, 1, true)
        .with_context(|| format!("cannot prepare certificates in {}", pki_dir.display()))?;
    let name = a.node_name.unwrap_or_else(node_name);
    let node = drover_proto::pki::Identity::Node(name.clone());
    let agent_dir = a.state_dir.join("agent");
    let node_material = match drover_proto::pki::tls::TlsMaterial::load(
        &agent_dir.join("pki"),
        drover_agent::pki::OWN,
    ) {
        Ok(m)
            if m.credential.identity().ok() == Some(node.clone())
                && m.ca_pem == pki.authority.bundle()
                && drover_proto::pki::renew::due(&m.credential.cert_pem)
                    .is_some_and(|at| at > std::time::SystemTime::now()) =>
        {
            m
        }
        _ => {
            let cred = pki
                .authority
                .signing()
                .issue(&node, drover_proto::pki::ca::LEAF_VALIDITY)?;
            drover_agent::pki::install(&agent_dir, &pki.authority.bundle(), &cred)?;
            drover_proto::pki::tls::TlsMaterial::load(
                &agent_dir.join("pki"),
                drover_agent::pki::OWN,
            )?
        }
    };
    let (pki, security) = if a.insecure_plaintext {
        tracing::warn!("--insecure-plaintext: no TLS, no ACLs; anyone who reaches the ports controls this cluster");
        (None, drover_proto::pki::tls::Security::Plaintext)
    } else {
        (
            Some(pki),
            drover_proto::pki::tls::Security::Tls(drover_proto::pki::tls::LiveTls::new(
                node_material,
            )?),
        )
    };
    let volumes = drover_agent::daemon::HostVolume::parse_all(&a.volumes, &a.state_dir)
        .map_err(|e| anyhow::anyhow!("--volume {e}"))?;
    // One registry and one listener for both (bound first: a port in use
    // is said before anything starts).
    let metrics = drover_proto::http::Metrics::new();
    let http = if a.no_http {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(a.http_listen)
                .await
                .with_context(|| format!("--http-listen {}", a.http_listen))?,
        )
    };
    let scheduler = Scheduler::start(SchedulerConfig {
        metrics: Some(metrics.clone()),
        pki,
        rate_limits: Some(Default::default()),
        id: 1,
        listen: a.listen,
        advertise: String::new(),
        data_dir: a.state_dir.join("scheduler"),
        node_timeout: Duration::from_secs(5),
        node_gc_after: None,
        snapshot_every: 1000,
        cluster_cidr: a.cluster_cidr.clone(),
        cluster: Default::default(),
    })
    .await
    .context("cannot start the scheduler")?;
    if !a.insecure_plaintext {
        ensure_acl(&scheduler, &pki_dir).await?;
    }
    let agent = Agent::start(AgentConfig {
        security,
        name: name.clone(),
        schedulers: vec![scheduler.local_addr.to_string()],
        listen: a.agent_listen,
        advertise: String::new(),
        state_dir: agent_dir,
        cgroup_root: a.cgroup_root.clone(),
        cpu_millis: None,
        memory_bytes: None,
        reserved_cpu_millis: 0,
        reserved_memory_bytes: 0,
        heartbeat: Duration::from_secs(1),
        // Each container under a monitor, as on a real node: the clone of
        // a small process, not of this one (whose every page a fork-like
        // clone would make copy-on-write), and it outlives a crash of this
        // process to be adopted by the next.
        monitor: Some(drover_agent::runtime::MonitorConfig {
            // The sealed copy this process runs from (see main).
            exe: PathBuf::from("/proc/self/exe"),
            cgroup_root: a.cgroup_root.clone(),
            log_max_bytes: 10 << 20,
            defaults: Default::default(),
        }),
        registries: Default::default(),
        image_limits: Default::default(),
        resource_defaults: Default::default(),
        user_namespaces: false,
        ended_retention: Duration::from_secs(3600),
        volumes,
        labels: Default::default(),
        metrics: Some(metrics.clone()),
    })
    .await
    .context("cannot start the agent")?;
    let http_stop = http.map(|listener| {
        println!(
            "drover dev: web UI on http://{0}/ui/, metrics on http://{0}/metrics",
            a.http_listen
        );
        let authorize = drover_scheduler::metrics::authorize(scheduler.peer.clone());
        drover_proto::http::start(listener, metrics, Some(authorize), scheduler.ui.routes())
    });
    println!(
        "drover dev: scheduler on {}, node {name} (agent API on {})",
        scheduler.local_addr, agent.local_addr
    );
    println!(
        "drover dev: state in {}; Ctrl-C stops every container and exits",
        a.state_dir.display()
    );
    if a.insecure_plaintext {
        println!(
            "drover dev: NO TLS, NO ACLs (--insecure-plaintext): use drover --insecure-plaintext"
        );
    } else {
        println!(
            "drover dev: TLS with the CA in {0}, ACLs on with the admin token in {0}/token; drover finds both there for the default state dir, else: export DROVER_PKI_DIR={0}",
            pki_dir.display()
        );
    }
    shutdown_signal().await;
    drop(http_stop);
    println!("drover dev: stopping containers");
    agent.shutdown().await;
    scheduler.shutdown().await;
    println!("drover dev: stopped");
    Ok(0)
}

/// This machine's hostname as a DNS-1123 label, or `dev`.
fn node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if drover_proto::spec::dns_label(&name).is_ok() {
        name
    } else {
        "dev".into()
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Turns ACLs on the first time, keeping the admin token in
/// `<pki_dir>/token` (0600), where `drover` finds it. A dev cluster whose
/// token file is gone keeps its ACLs; it says so.
async fn ensure_acl(scheduler: &Scheduler, pki_dir: &std::path::Path) -> Result<()> {
    let path = pki_dir.join("token");
    if path.exists() {
        return Ok(());
    }
    let start = std::time::Instant::now();
    loop {
        match drover_scheduler::server::acl_api::bootstrap(&scheduler.peer).await {
            Ok(t) => {
                drover_proto::pki::write_private(&path, format!("{}\n", t.secret).as_bytes())?;
                return Ok(());
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                eprintln!(
                    "drover dev: ACLs are on but {} is gone: give drover a token you kept (--token)",
                    path.display()
                );
                return Ok(());
            }
            Err(s) if start.elapsed() < Duration::from_secs(20) => {
                tracing::debug!(error = %s.message(), "waiting to bootstrap ACLs");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => anyhow::bail!("cannot bootstrap ACLs: {}", s.message()),
        }
    }
}

/// `drover dev --cleanup`: what the agent of a dev on `state_dir` left
/// (see `drover-agent cleanup`), then the state dir itself.
fn cleanup(state_dir: &std::path::Path, cgroup_root: &std::path::Path) -> Result<i32> {
    use drover_agent::leftovers::cleanup;
    if !state_dir.exists() {
        println!("{} does not exist: nothing to remove", state_dir.display());
        return Ok(0);
    }
    let agent = state_dir.join("agent");
    let cgroups = drover_agent::cgroups::manager_for(cgroup_root);
    let found = cleanup::scan(std::slice::from_ref(&agent), cgroups.as_ref());
    print!("{found}");
    if !found.live.is_empty() {
        anyhow::bail!(
            "a drover dev runs on {}: stop it first",
            state_dir.display()
        );
    }
    let errors = found.remove(cgroups.as_ref());
    if let Some(e) = errors.first() {
        anyhow::bail!("{e} (and {} more errors)", errors.len() - 1);
    }
    cleanup::remove_state_dir(&agent)?;
    // The rest (the Raft log, certificates) has nothing mounted or running.
    std::fs::remove_dir_all(state_dir)
        .map_err(|e| anyhow::anyhow!("remove {}: {e}", state_dir.display()))?;
    println!("removed {}", state_dir.display());
    Ok(0)
}
