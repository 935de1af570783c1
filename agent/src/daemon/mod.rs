//! The node agent daemon: registers its node, follows the scheduler, and
//! converges the containers on this machine to the desired set.
//!
//! `connection` talks to the scheduler (register, heartbeat, watch, report),
//! `supervisor` turns each new desired set into started and stopped
//! allocations, `allocation` runs one allocation's life (image, bundle,
//! container, restarts, stop) through a `driver` (`node_driver` on a real
//! node), `reporter` batches what they observe back to
//! the scheduler, `netwatch` keeps what the heartbeats say of the node's
//! container network current, and `api` serves this node's own API (logs).

pub mod allocation;
pub mod api;
pub mod connection;
pub mod dns;
pub mod driver;
pub mod error;
pub mod exec;
#[cfg(test)]
mod fake_driver;
pub mod health;
#[cfg(test)]
mod life_tests;
pub mod mesh;
pub mod metrics;
pub mod netwatch;
pub mod node_driver;
pub mod reporter;
pub mod resources;
pub mod restart;
pub mod retention;
pub mod supervisor;
pub mod userns;

use crate::cgroups;
use crate::image::ImageStore;
use crate::network::NetworkError;
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// A host directory the agent offers jobs under a name (Nomad's host
/// volumes): `drover-agent run --volume data=/srv/data[:ro]`. A job mounts
/// it by name; it never names a host path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVolume {
    pub name: String,
    /// Resolved (every link followed) when the agent starts.
    pub path: PathBuf,
    /// Offered read-only: jobs may only mount it read-only.
    pub read_only: bool,
    /// The directory's device and inode when the agent started: a path
    /// that leads elsewhere since (a symlink put in its place) is refused.
    pub identity: (u64, u64),
}

impl HostVolume {
    /// `NAME=PATH` or `NAME=PATH:ro`; PATH must be an existing directory.
    pub fn parse(s: &str) -> Result<HostVolume, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PATH or NAME=PATH:ro"))?;
        drover_proto::spec::dns_label(name).map_err(|e| format!("{s:?}: the name {e}"))?;
        let (path, read_only) = match rest.strip_suffix(":ro") {
            Some(p) => (p, true),
            None => (rest.strip_suffix(":rw").unwrap_or(rest), false),
        };
        if !path.starts_with('/') {
            return Err(format!("{s:?}: {path:?} must be an absolute path"));
        }
        let path = std::fs::canonicalize(path).map_err(|e| format!("{s:?}: {path}: {e}"))?;
        if !path.is_dir() {
            return Err(format!("{s:?}: {} is not a directory", path.display()));
        }
        if path == std::path::Path::new("/") {
            return Err(format!("{s:?}: the host's root cannot be a volume"));
        }
        let identity = dir_identity(&path).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HostVolume {
            name: name.to_string(),
            path,
            read_only,
            identity,
        })
    }

    /// The `--volume` flags' volumes, checked together (see `check_all`).
    pub fn parse_all(
        flags: &[String],
        state_dir: &std::path::Path,
    ) -> Result<Vec<HostVolume>, String> {
        let volumes = flags
            .iter()
            .map(|v| HostVolume::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        HostVolume::check_all(&volumes, state_dir)?;
        Ok(volumes)
    }

    /// Checks a set of volumes: names unique, and no volume inside another
    /// or the agent's state dir (or holding it): a job writing to one must
    /// not reach what another, or the agent, holds.
    pub fn check_all(volumes: &[HostVolume], state_dir: &std::path::Path) -> Result<(), String> {
        let state_dir =
            std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        for (i, a) in volumes.iter().enumerate() {
            if a.path.starts_with(&state_dir) || state_dir.starts_with(&a.path) {
                return Err(format!(
                    "{}: {} overlaps the state dir {}",
                    a.name,
                    a.path.display(),
                    state_dir.display()
                ));
            }
            for b in &volumes[i + 1..] {
                if a.name == b.name {
                    return Err(format!("{}: offered twice", a.name));
                }
                if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                    return Err(format!(
                        "{} ({}) and {} ({}) overlap: one is inside the other",
                        a.name,
                        a.path.display(),
                        b.name,
                        b.path.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether its path still leads to the directory offered at start.
    pub fn unchanged(&self) -> bool {
        std::fs::canonicalize(&self.path).is_ok_and(|p| p == self.path)
            && dir_identity(&self.path).is_ok_and(|id| id == self.identity)
    }
}

/// A directory's device and inode.
fn dir_identity(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The node's own resolver configuration: where the DNS server forwards
/// names outside the cluster, and what host-network containers get.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Clone, Debug)]
pub struct Config {
    /// The node's name (a DNS-1123 label; default: the hostname).
    pub name: String,
    /// Scheduler replica addresses (`host:port`), tried in turn.
    pub schedulers: Vec<String>,
    /// Where this agent's own API listens (logs).
    pub listen: SocketAddr,
    /// The address the CLI reaches this agent's API at (default: the listen address).
    pub advertise: String,
    /// Bundles, logs and the image cache live here.
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// Override detected resources.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Kept back for the system (the OS, the agent): the node offers the
    /// scheduler what it has less these, as Nomad's `reserved` and
    /// Kubernetes' `--system-reserved` do.
    pub reserved_cpu_millis: u64,
    pub reserved_memory_bytes: u64,
    pub heartbeat: Duration,
    /// Start containers under monitor processes so they outlive the agent
    /// (see `runtime::monitor`); `None` makes them the agent's own children.
    pub monitor: Option<crate::runtime::MonitorConfig>,
    /// How registry images are pulled (insecure hosts, credentials).
    pub registries: crate::image::RegistryConfig,
    /// How large an image may be once unpacked.
    pub image_limits: crate::image::ImageLimits,
    /// Limits a container gets where its job sets none.
    pub resource_defaults: crate::runtime::ResourceDefaults,
    /// Run private-network replicas in user namespaces unless their job
    /// says `security.user_namespace: false`.
    pub user_namespaces: bool,
    /// How long what an ended allocation leaves on disk (its log) is kept
    /// (see `retention`).
    pub ended_retention: Duration,
    /// This node's certificate and the cluster CA (see `crate::pki`), or
    /// plaintext for `--insecure-plaintext`.
    pub security: drover_proto::pki::tls::Security,
    /// Host volumes offered to jobs.
    pub volumes: Vec<HostVolume>,
    /// Labels jobs' constraints match (`--label zone=eu-1a`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where this agent's metrics are registered (see `metrics`); whoever
    /// serves `/metrics` holds it too. `None`: not measured.
    pub metrics: Option<Arc<drover_proto::http::Metrics>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no scheduler address given")]
    NoScheduler,
    #[error("{0}")]
    Reserve(String),
    #[error(transparent)]
    StateDir(#[from] crate::leftovers::LeftoverError),
    #[error(transparent)]
    Format(#[from] drover_proto::format::FormatError),
}

/// What an agent's state directory is, for its format marker
/// (`drover_proto::format`).
pub const STATE_FORMAT: &str = "drover-agent-state";
/// The layout of the state directory this build reads and writes: bundles
/// with their monitors' `monitor.json`, logs, images, addresses (`ipam`),
/// routes and credentials (`pki`).
pub const STATE_VERSION: u32 = 1;

/// Who records the marker: this program and release.
pub fn program() -> String {
    format!("drover-agent {}", env!("CARGO_PKG_VERSION"))
}

/// The address this host reaches the first of `schedulers` from (the
/// kernel's choice of source address for that route): the node's address
/// on the cluster's network.
pub fn cluster_address(schedulers: &[String]) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let first = schedulers.first()?;
    let first = first
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let to = first.to_socket_addrs().ok()?.next()?;
    let bind: std::net::SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    // A UDP "connection" sends nothing: it only asks the kernel for a route.
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Samples the cgroup usage of every running allocation each
/// [`metrics::SAMPLE_EVERY`] for `/metrics`, until the agent stops.
async fn sample_usage(shared: Arc<Shared>, mut stop: broadcast::Receiver<()>) {
    loop {
        let running = shared.reporter.running();
        let on = shared.clone();
        let began = std::time::Instant::now();
        let sampled =
            tokio::task::spawn_blocking(move || metrics::sample(on.runtime.cgroups(), &running))
                .await;
        shared
            .stats
            .sample_seconds
            .set(began.elapsed().as_secs_f64());
        if let Ok(samples) = sampled {
            *shared.stats.usage.lock().unwrap_or_else(|p| p.into_inner()) = samples;
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(metrics::SAMPLE_EVERY) => {}
        }
    }
}

/// What every allocation runner shares.
pub struct Shared {
    /// Host id ranges of containers in user namespaces.
    pub id_ranges: userns::IdRanges,
    /// The agent-wide default for `security.user_namespace`.
    pub user_namespaces: bool,
    pub node: String,
    pub state_dir: PathBuf,
    pub images: ImageStore,
    pub runtime: Runtime,
    pub reporter: reporter::Reporter,
    /// When the agent sent the last heartbeat that a leader acknowledged:
    /// the fencing clock (see `drover_proto::fencing`).
    pub last_contact: std::sync::Mutex<std::time::Instant>,
    /// The node timeout the scheduler fences nodes by, in ms.
    pub node_timeout_ms: std::sync::atomic::AtomicU64,
    /// The node's container network, once the scheduler gave it a subnet.
    pub network: std::sync::OnceLock<crate::network::NodeNetwork>,
    /// Why the network could not be set up for the subnet the scheduler
    /// gave (subnet, error); containers needing it are refused meanwhile.
    pub network_problem: std::sync::Mutex<Option<(String, String)>>,
    /// What the heartbeats say of the network: why it is unavailable, ""
    /// when it works (see `netwatch`). Its own lock, held only to copy: a
    /// heartbeat never waits for a setup.
    pub network_status: std::sync::Mutex<String>,
    /// Held while the agent runs: marks the state dir (and every link
    /// marked with it) as in use (see `crate::leftovers`).
    pub lock: crate::leftovers::StateLock,
    /// The address the routing mesh listens on.
    pub mesh_ip: std::net::IpAddr,
    /// The node's DNS server (service discovery by name), serving on the
    /// bridge address once the network is set up.
    pub dns: dns::Dns,
    /// Host volumes offered to jobs.
    pub volumes: Vec<HostVolume>,
    /// Why the DNS server could not listen, last time it was tried ("").
    pub dns_error: std::sync::Mutex<String>,
    /// The secrets and configs the last desired set carried, by (kind,
    /// name): what replicas starting here mount. Held in memory only.
    pub secrets:
        std::sync::Mutex<std::collections::HashMap<(String, String), drover_proto::pb::SecretData>>,
    /// The ports and replicas containers are kept from (see `network::guard`).
    pub control_plane: crate::network::guard::ControlPlane,
    /// The node's certificate and the CAs it trusts (`None` without TLS).
    pub tls: Option<drover_proto::pki::tls::LiveTls>,
    /// Wakes the renewal of the node's certificate now (the cluster's CAs
    /// changed: a CA rotation).
    pub renew_now: Arc<tokio::sync::Notify>,
    pub monitor: Option<crate::runtime::MonitorConfig>,
    /// Containers a previous agent process left running, by allocation id,
    /// until a runner claims them or the first desired set disowns them.
    pub adopted: std::sync::Mutex<std::collections::HashMap<String, node_driver::Adopted>>,
    /// Held shared from pulling an image until its bundle links the layers,
    /// and exclusively by layer GC, so GC never frees a layer in between.
    pub image_use: std::sync::RwLock<()>,
    /// What the agent counts (see `metrics`).
    pub stats: metrics::AgentStats,
}

impl Shared {
    /// What the heartbeats say of this node's trust: the id of the CA set
    /// it trusts and the CA that signed its certificate ("" without TLS).
    pub fn trust_report(&self) -> (String, String) {
        match &self.tls {
            Some(l) => {
                let m = l.material();
                (
                    drover_proto::pki::ca::bundle_id(&m.ca_pem),
                    drover_proto::pki::ca::issuer(&m.credential.cert_pem).unwrap_or_default(),
                )
            }
            None => Default::default(),
        }
    }

    /// Records a heartbeat sent at `sent` that a leader acknowledged, with
    /// the node timeout it answered (0: keep the one known).
    pub fn acknowledged(&self, sent: std::time::Instant, node_timeout_ms: u64) {
        if node_timeout_ms > 0 {
            self.node_timeout_ms
                .store(node_timeout_ms, std::sync::atomic::Ordering::Relaxed);
        }
        let last = {
            let mut last = self.last_contact.lock().unwrap_or_else(|e| e.into_inner());
            *last = (*last).max(sent);
            *last
        };
        // Outside the lock: nobody reading the clock waits on the disk.
        if let Err(e) = crate::fence_clock::save(&self.state_dir, last, self.node_timeout()) {
            // The monitors go by the file: if it cannot be written they will
            // stop their containers at the node timeout, as if cut off.
            tracing::warn!(error = %e, "cannot record the fencing clock; containers will be fenced");
        }
    }

    /// How long ago the last acknowledged heartbeat was sent.
    pub fn since_acknowledged(&self) -> Duration {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub fn node_timeout(&self) -> Duration {
        Duration::from_millis(
            self.node_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Removes cached image layers that no bundle on this node links to
    /// (bundles reach their layers through `<bundle>/l/<n>` symlinks, or
    /// idmapped mounts beside a `<bundle>/l/<n>.layer` symlink).
    /// Blocking; the agent runs it after an allocation's bundle is removed.
    pub fn gc_images(&self) -> Result<usize, crate::image::ImageError> {
        let _exclusive = self.image_use.write().unwrap_or_else(|e| e.into_inner());
        let mut in_use = std::collections::HashSet::new();
        let bundles = std::fs::read_dir(self.state_dir.join("bundles"));
        for bundle in bundles.into_iter().flatten().flatten() {
            let links = std::fs::read_dir(bundle.path().join("l"));
            for link in links.into_iter().flatten().flatten() {
                if let Ok(target) = std::fs::read_link(link.path()) {
                    if let Some(hex) = target.file_name() {
                        in_use.insert(hex.to_string_lossy().into_owned());
                    }
                }
            }
        }
        self.images.gc(&in_use)
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("bundles").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{id}.log"))
    }

    /// Starts the node's DNS server on the bridge address of `net` unless
    /// it serves (`netwatch` tries again while it cannot). A node where it
    /// cannot listen still runs containers: they get the node's own
    /// resolvers instead (see `node_driver`).
    pub fn serve_dns(&self, net: &crate::network::NodeNetwork) {
        if self.dns.serving() {
            return;
        }
        let Some(subnet) = crate::network::inventory::parse_prefix(&net.subnet) else {
            return;
        };
        // Containers an earlier agent process left keep their `egress: none`.
        for ip in crate::network::guard::members(&net.bridge, "no_egress") {
            self.dns.set_egress(ip.into(), Some(false));
        }
        let addr = std::net::SocketAddr::from((net.gateway, 53));
        let result = self
            .dns
            .serve(addr, subnet, PathBuf::from(HOST_RESOLV_CONF));
        let now = result.err().map(|e| e.to_string()).unwrap_or_default();
        let mut last = self.dns_error.lock().unwrap_or_else(|e| e.into_inner());
        if now != *last && !now.is_empty() {
            tracing::warn!(%addr, error = %now, "cannot serve DNS on the bridge: containers get the node's resolvers, and no names of the cluster's");
        }
        *last = now;
    }

    /// Sets up the node's container network for `subnet` unless it is up;
    /// on failure records why, for the allocations it refuses meanwhile.
    /// Blocking.
    pub fn setup_network(&self, subnet: &str) -> Result<(), std::sync::Arc<NetworkError>> {
        let mut problem = self
            .network_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.network.get().is_some() {
            return Ok(());
        }
        match crate::network::NodeNetwork::setup(
            &self.node,
            subnet,
            &self.state_dir,
            &self.control_plane,
        ) {
            Ok(net) => {
                tracing::info!(subnet = %subnet, bridge = %net.bridge, "container network ready");
                // Addresses of containers an earlier agent process left (and
                // that were cleaned at start) go back to the pool.
                for (_, alloc) in net.allocated() {
                    if !self.bundle_dir(&alloc).exists() {
                        net.detach(&alloc);
                    }
                }
                self.serve_dns(&net);
                let _ = self.network.set(net);
                *problem = None;
                self.set_network_error("");
                Ok(())
            }
            Err(e) => {
                let e = std::sync::Arc::new(e);
                let now = Some((subnet.to_string(), e.to_string()));
                if *problem != now {
                    tracing::error!(subnet = %subnet, error = %e, "cannot set up the container network; refusing containers with private networking");
                }
                *problem = now;
                self.set_network_error(&e.to_string());
                Err(e)
            }
        }
    }

    /// The node's network for a container with private networking: `None`
    /// before the scheduler gave a subnet; an error (after one more try)
    /// while the network cannot be set up. Blocking.
    pub fn private_network(
        &self,
    ) -> Result<Option<&crate::network::NodeNetwork>, error::NetworkUnavailable> {
        if let Some(n) = self.network.get() {
            return Ok(Some(n));
        }
        let subnet = self
            .network_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(s, _)| s.clone());
        match subnet {
            None => Ok(None),
            Some(subnet) => match self.setup_network(&subnet) {
                Ok(()) => Ok(self.network.get()),
                Err(e) => Err(error::NetworkUnavailable(e)),
            },
        }
    }

    /// Why the node's container network is unavailable, for the heartbeats:
    /// "" when it works (or before the scheduler gave a subnet).
    pub fn network_error(&self) -> String {
        self.network_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records what the next heartbeats say of the network; true when that changed.
    pub fn set_network_error(&self, error: &str) -> bool {
        let mut status = self
            .network_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let changed = *status != error;
        if changed {
            *status = error.to_string();
        }
        changed
    }

    /// The re-adopted container of allocation `id`, if there is one.
    pub fn take_adopted(&self, id: &str) -> Option<node_driver::Adopted> {
        self.adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

/// Says so when containers of agents that no longer run are still on this
/// machine (they hold resources nobody accounts for).
fn warn_about_orphans(own_dir: &std::path::Path, cgroup_root: &std::path::Path) {
    use crate::leftovers::cleanup;
    let others: Vec<PathBuf> = cleanup::discover()
        .into_iter()
        .filter(|d| std::fs::canonicalize(d).ok().as_deref() != Some(own_dir))
        .collect();
    let cgroups = cgroups::manager_for(cgroup_root);
    let found = cleanup::scan(&others, cgroups.as_ref());
    let running = found.orphans.iter().filter(|o| o.running()).count();
    if running > 0 {
        tracing::warn!(
            containers = running,
            "containers of agents that no longer run are still running here; \
             `drover-agent cleanup --dry-run` lists them, `drover-agent cleanup` removes them"
        );
    }
}

pub struct Agent {
    pub local_addr: SocketAddr,
    stop: broadcast::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: JoinHandle<()>,
    report_stop: broadcast::Sender<()>,
    reporter_task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Agent {
    pub async fn start(config: Config) -> Result<Agent, DaemonError> {
        let detected = resources::detect();
        let (cpu_millis, memory_bytes) = (
            config.cpu_millis.unwrap_or(detected.cpu_millis),
            config.memory_bytes.unwrap_or(detected.memory_bytes),
        );
        let offered = |what: &str, total: u64, reserved: u64, unit: &str| {
            total.checked_sub(reserved).filter(|o| *o > 0).ok_or_else(|| {
                DaemonError::Reserve(format!(
                    "--reserve-{what}: {reserved}{unit} is all of the node's {total}{unit}: nothing would be left to offer"
                ))
            })
        };
        let offered_cpu = offered("cpu", cpu_millis, config.reserved_cpu_millis, "m")?;
        let offered_memory = offered(
            "memory",
            memory_bytes,
            config.reserved_memory_bytes,
            " bytes",
        )?;
        if config.schedulers.is_empty() {
            return Err(DaemonError::NoScheduler);
        }
        // Bundles hold configs with the jobs' environment (secrets), logs
        // hold their output, images hold setuid binaries: none of it is for
        // other users of the host (moby made the same change for
        // CVE-2021-41091).
        for sub in ["", "bundles", "logs", "images"] {
            let p = config.state_dir.join(sub);
            crate::image::private_dir(&p).map_err(|e| DaemonError::Io {
                path: p.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        // ... except that a container in a user namespace (its root is not
        // the host's) must pass through to its rootfs: the state dir and
        // bundles may be traversed, not listed (0711, as moby's root dir
        // with remapped roots); each bundle stays 0700, or 0710 to its
        // container's root group.
        for sub in ["", "bundles"] {
            let p = config.state_dir.join(sub);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).map_err(
                |source| DaemonError::Io {
                    path: p.clone(),
                    source,
                },
            )?;
        }
        // One agent per state dir; the lock also tells others we are alive.
        let lock = crate::leftovers::StateLock::acquire(&config.state_dir)?;
        // Before reading what it holds: a newer release's state is refused
        // (the containers it started keep running under their monitors).
        drover_proto::format::check_and_record(
            &config.state_dir,
            STATE_FORMAT,
            STATE_VERSION,
            &program(),
        )?;
        // After the lock: only this agent frees this state dir's id ranges.
        let id_ranges =
            userns::IdRanges::open(std::path::Path::new(userns::REGISTRY), &config.state_dir)
                .map_err(|source| DaemonError::Io {
                    path: userns::REGISTRY.into(),
                    source,
                })?;
        // Links agents that are gone for good left on this host.
        let own_dir =
            std::fs::canonicalize(&config.state_dir).unwrap_or_else(|_| config.state_dir.clone());
        match crate::network::reclaim_gone(&own_dir) {
            Ok(gone) if !gone.is_empty() => {
                tracing::warn!(links = ?gone, "removed links agents that are gone left behind")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for links gone agents left"),
        }
        // Guard tables whose bridge went without them (a crash in between).
        for table in crate::network::guard::orphan_tables() {
            crate::network::guard::remove(&table);
            tracing::warn!(table = %table, "removed a guard table whose bridge is gone");
        }
        warn_about_orphans(&own_dir, &config.cgroup_root);
        let runtime = Runtime::new(cgroups::manager_for(&config.cgroup_root))
            .with_defaults(config.resource_defaults);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen {
                addr: config.listen,
                source,
            })?;
        let advertise = if config.advertise.is_empty() {
            local_addr.to_string()
        } else {
            config.advertise.clone()
        };
        let tls = drover_proto::pki::tls::ClientTls::from_security(
            &config.security,
            drover_proto::pki::SCHEDULER_NAME,
        );
        let links = connection::Links::new(config.schedulers.clone(), tls);
        let stats = metrics::AgentStats::default();
        let reporter = reporter::Reporter::new(config.name.clone()).observed(stats.clone());
        let shared = Arc::new(Shared {
            id_ranges,
            user_namespaces: config.user_namespaces,
            node: config.name.clone(),
            state_dir: config.state_dir.clone(),
            images: ImageStore::new(config.state_dir.join("images"))
                .with_registries(config.registries.clone())
                .with_limits(config.image_limits)
                .counting(stats.pulled_bytes.clone()),
            runtime,
            reporter: reporter.clone(),
            // Resumed from disk: a restarted agent does not restart the
            // fencing clock (containers it re-adopts may be replaced already).
            last_contact: std::sync::Mutex::new(
                crate::fence_clock::load(&config.state_dir).unwrap_or_else(std::time::Instant::now),
            ),
            node_timeout_ms: std::sync::atomic::AtomicU64::new(
                drover_proto::fencing::DEFAULT_NODE_TIMEOUT.as_millis() as u64,
            ),
            network: std::sync::OnceLock::new(),
            network_problem: Default::default(),
            network_status: Default::default(),
            lock,
            tls: match &config.security {
                drover_proto::pki::tls::Security::Tls(l) => Some(l.clone()),
                drover_proto::pki::tls::Security::Plaintext => None,
            },
            renew_now: Default::default(),
            control_plane: crate::network::guard::ControlPlane::of(
                local_addr.port(),
                &config.schedulers,
            ),
            mesh_ip: advertise
                .rsplit_once(':')
                .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok())
                .unwrap_or(local_addr.ip()),
            dns: dns::Dns::new(),
            volumes: config.volumes.clone(),
            dns_error: Default::default(),
            secrets: Default::default(),
            monitor: config.monitor.clone(),
            image_use: std::sync::RwLock::new(()),
            adopted: Default::default(),
            stats,
        });
        node_driver::adopt_leftovers(&shared);

        let (stop, _) = broadcast::channel(1);
        let (desired_tx, desired_rx) = watch::channel(None);
        let me = connection::Identity {
            name: config.name.clone(),
            address: advertise,
            cpu_millis: offered_cpu,
            memory_bytes: offered_memory,
            volumes: config
                .volumes
                .iter()
                .map(|v| drover_proto::pb::HostVolume {
                    name: v.name.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            disk_bytes: resources::disk_bytes(&config.state_dir),
            labels: config.labels.clone(),
            facts: resources::facts(cpu_millis, memory_bytes, &config.cgroup_root),
        };
        let mut tasks = vec![
            tokio::spawn(api::serve(
                listener,
                config.security.clone(),
                shared.clone(),
                stop.subscribe(),
            )),
            tokio::spawn(netwatch::run(
                shared.clone(),
                netwatch::RECHECK,
                stop.subscribe(),
            )),
            tokio::spawn(connection::run(
                links.clone(),
                me,
                config.heartbeat,
                desired_tx,
                shared.clone(),
                stop.subscribe(),
            )),
            tokio::spawn(retention::run(
                shared.clone(),
                config.ended_retention,
                stop.subscribe(),
            )),
        ];
        if let Some(m) = &config.metrics {
            let reporter = shared.reporter.clone();
            shared.stats.register(m, move || reporter.states());
            tasks.push(tokio::spawn(sample_usage(shared.clone(), stop.subscribe())));
        }
        if let drover_proto::pki::tls::Security::Tls(live) = &config.security {
            tasks.push(tokio::spawn(crate::pki::keep_renewed(
                config.state_dir.clone(),
                config.name.clone(),
                live.clone(),
                config.schedulers.clone(),
                shared.renew_now.clone(),
                stop.subscribe(),
            )));
        }
        // The reporter stops last, so the final states of stopping containers get out.
        let (report_stop, _) = broadcast::channel(1);
        let reporter_task = tokio::spawn(reporter.run(links, report_stop.subscribe()));
        let shared_for_shutdown = shared.clone();
        let supervisor = tokio::spawn(supervisor::run(shared, desired_rx, stop.subscribe()));
        tracing::info!(node = %config.name, api = %local_addr, "agent running");
        Ok(Agent {
            local_addr,
            stop,
            tasks,
            supervisor,
            report_stop,
            reporter_task,
            shared: shared_for_shutdown,
        })
    }

    /// Stops every container this agent started, then its tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.supervisor.await;
        if let Some(net) = self.shared.network.get() {
            // Every container is gone: so are their addresses and the node's bridge.
            for (_, alloc) in net.allocated() {
                net.detach(&alloc);
            }
            net.teardown();
        }
        self.shared.dns.close();
        let _ = self.report_stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.reporter_task).await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}
