//! The agent's driver: allocations as real containers on this node (OCI
//! images, bundles on overlayfs, namespaces and cgroups, an address on the
//! node's bridge). See `driver` for the seam it implements.

use super::driver::{Adoption, Alloc, Driver};
use super::error::{CleanupError, StartError};
use super::{health, Shared};
use crate::bundle::{Bundle, ContainerFile, ContainerRequest, Network};
use crate::image::ImageRef;
use crate::runtime::{Container, ExitStatus};
use drover_proto::pb;
use drover_proto::spec::{self, Health, JobSpec, OnDisconnect};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs allocations as containers on this node.
///
/// A container with `network: private` gets its `eth0` while it is being
/// started, after its namespaces exist and before its command runs (see
/// `Runtime::start_then`): a command that connects out at once finds its
/// network there. `attach_network` then reports the address it got.
#[derive(Clone)]
pub struct NodeDriver {
    shared: Arc<Shared>,
    /// Addresses given during `start`, until `attach_network` reports them.
    attached: Arc<Mutex<HashMap<String, IpAddr>>>,
}

impl NodeDriver {
    pub fn new(shared: Arc<Shared>) -> NodeDriver {
        NodeDriver {
            shared,
            attached: Default::default(),
        }
    }
}

/// A container a previous agent process started, found running (or with its
/// exit status recorded) at start.
pub struct Adopted {
    pub bundle: Bundle,
    pub container: Container,
}

impl Driver for NodeDriver {
    type Prepared = Bundle;
    type Task = Container;

    async fn network_ready(&self, alloc: &Alloc) -> Result<(), StartError> {
        if alloc.spec.network != spec::Network::Private {
            return Ok(());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.private_network().map(|_| ()))
            .await
            .map_err(StartError::task("network"))?
            .map_err(StartError::NodeNetwork)
    }

    async fn prepare(&self, alloc: &Alloc) -> Result<Bundle, StartError> {
        let shared = self.shared.clone();
        let image = alloc.spec.image.clone();
        let mut req = request(alloc);
        req.binds = host_binds(&shared.volumes, &alloc.spec)?;
        let private = alloc.spec.network == spec::Network::Private;
        if private
            && alloc
                .spec
                .security
                .user_namespace
                .unwrap_or(shared.user_namespaces)
        {
            req.user_namespace = Some(shared.id_ranges.allocate(&alloc.id)?);
        }
        let dir = shared.bundle_dir(&alloc.id);
        let hostname = alloc.name.clone();
        let spec = alloc.spec.clone();
        tokio::task::spawn_blocking(move || {
            req.files = container_files(&shared, private, &hostname);
            req.files.extend(secret_files(&shared, &spec)?);
            let r: ImageRef = image.parse()?;
            let _in_use = shared.image_use.read().unwrap_or_else(|e| e.into_inner());
            let began = std::time::Instant::now();
            let img = shared.images.pull(&r)?;
            shared
                .stats
                .pull_seconds
                .observe(began.elapsed().as_secs_f64());
            Ok(Bundle::create(&dir, &img, &req)?)
        })
        .await
        .map_err(StartError::task("prepare"))?
    }

    async fn start(&self, alloc: &Alloc, bundle: &Bundle) -> Result<Container, StartError> {
        let fenced_job = alloc.spec.on_disconnect == OnDisconnect::Stop;
        let fence_clock = fenced_job.then(|| crate::fence_clock::file(&self.shared.state_dir));
        let shared = self.shared.clone();
        let dir = bundle.dir().to_path_buf();
        let id = alloc.id.clone();
        let log_path = shared.log_path(&alloc.id);
        let private =
            (alloc.spec.network == spec::Network::Private).then_some(crate::network::Access {
                control_plane: alloc.spec.security.control_plane_access,
                egress: alloc.spec.egress == spec::Egress::All,
            });
        let attached = self.attached.clone();
        let hostname = alloc.name.clone();
        tokio::task::spawn_blocking(move || {
            // The network, between the container's creation and its command;
            // its error as the network's, not the runtime's.
            let mut failure = None;
            let started = {
                let mut attach = |pid: i32| {
                    let Some(access) = private else {
                        return Ok(());
                    };
                    let net = shared
                        .private_network()
                        .map_err(StartError::AttachUnavailable);
                    let ip = net.and_then(|net| match net {
                        Some(net) => Ok(Some(net.attach(&id, pid, access)?)),
                        None => Ok(None),
                    });
                    match ip {
                        Ok(ip) => {
                            if let Some(ip) = ip.map(IpAddr::from) {
                                // Its own name at its address, before its command runs.
                                let hosts = Bundle::file_at(&dir, "/etc/hosts");
                                let _ = std::fs::write(hosts, hosts_file(&hostname, Some(ip)));
                                shared.dns.set_egress(ip, Some(access.egress));
                                let mut a = attached.lock().unwrap_or_else(|e| e.into_inner());
                                a.insert(id.clone(), ip);
                            }
                            Ok(())
                        }
                        Err(e) => {
                            let message = e.to_string();
                            failure = Some(e);
                            Err(message)
                        }
                    }
                };
                match &shared.monitor {
                    Some(monitor) => shared.runtime.start_monitored(
                        monitor,
                        &dir,
                        &id,
                        &log_path,
                        fence_clock.as_deref(),
                        Some(&mut attach),
                    ),
                    None => {
                        let log = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log_path)
                            .and_then(crate::runtime::Stdio::log)
                            .map_err(|source| StartError::Log {
                                path: log_path.clone(),
                                source,
                            })?;
                        shared.runtime.start_then(&dir, &id, log, &mut attach)
                    }
                }
            };
            started.map_err(|e| failure.take().unwrap_or_else(|| e.into()))
        })
        .await
        .map_err(StartError::task("start"))?
    }

    async fn attach_network(&self, alloc: &Alloc, _pid: i32) -> Result<Option<IpAddr>, StartError> {
        // Attached during `start`, before the command ran.
        let mut a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        Ok(a.remove(&alloc.id))
    }

    fn reap(&self, id: &str, status: ExitStatus) -> bool {
        let cgroups = self.shared.runtime.cgroups();
        let oom = status == ExitStatus::Signaled(9) && cgroups.oom_kills(id) > 0;
        let _ = cgroups.remove(id);
        oom
    }

    async fn probe(&self, check: &Health, alloc: &Alloc, pid: i32) -> health::Probe {
        let target = health::Target {
            pid,
            id: alloc.id.clone(),
            bundle: self.shared.bundle_dir(&alloc.id),
            runtime: self.shared.runtime.clone(),
        };
        health::probe(check, &target, alloc.spec.network).await
    }

    async fn reach(&self, addr: SocketAddr, timeout: Duration) -> health::Probe {
        health::reach(addr, timeout).await
    }

    fn open_connections(&self, pid: i32, port: u16) -> usize {
        // The tables of the container's own network namespace. Unreadable
        // (it has just exited): none.
        ["tcp", "tcp6"]
            .iter()
            .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
            .map(|table| connections_to(&table, port))
            .sum()
    }

    async fn disk_used(&self, id: &str, stop_after: u64) -> Option<u64> {
        let upper = self.shared.bundle_dir(id).join("upper");
        tokio::task::spawn_blocking(move || {
            upper
                .exists()
                .then(|| super::resources::disk_used(&upper, stop_after))
        })
        .await
        .ok()
        .flatten()
    }

    async fn cleanup(&self, id: &str, bundle: Option<Bundle>) -> Result<(), CleanupError> {
        self.remove(id, bundle, true).await
    }

    async fn discard(&self, id: &str, bundle: Option<Bundle>) -> Result<(), CleanupError> {
        self.remove(id, bundle, false).await
    }

    fn adopt(&self, id: &str) -> Option<Adoption<Self>> {
        let adopted = self.shared.take_adopted(id)?;
        // Its network was set up by the agent that started it: keep it.
        let ip = self.shared.network.get().and_then(|net| {
            net.allocated()
                .into_iter()
                .find(|(_, a)| a == id)
                .map(|(ip, _)| IpAddr::from(ip))
        });
        Some(Adoption {
            prepared: adopted.bundle,
            task: adopted.container,
            ip,
        })
    }

    fn disown_except(&self, wanted: &HashSet<String>) {
        let unwanted: Vec<Adopted> = {
            let mut adopted = self
                .shared
                .adopted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> = adopted
                .keys()
                .filter(|id| !wanted.contains(*id))
                .cloned()
                .collect();
            ids.iter().filter_map(|id| adopted.remove(id)).collect()
        };
        for a in unwanted {
            let id = a.bundle.id().to_string();
            tracing::info!(alloc = %id, "stopping an adopted container no longer desired here");
            tokio::spawn(async move {
                let _ = a.container.stop(Duration::from_secs(10)).await;
                if let Err(err) = a.bundle.cleanup() {
                    tracing::warn!(alloc = %id, error = %err, "bundle cleanup");
                }
            });
        }
    }

    fn has_traces(&self, id: &str) -> bool {
        self.shared.bundle_dir(id).exists()
    }

    fn since_acknowledged(&self) -> Duration {
        self.shared.since_acknowledged()
    }

    fn node_timeout(&self) -> Duration {
        self.shared.node_timeout()
    }
}

impl NodeDriver {
    /// Everything of a stopped container: its network, cgroup, bundle and
    /// id range; with `gc`, image layers no container uses any more.
    async fn remove(&self, id: &str, bundle: Option<Bundle>, gc: bool) -> Result<(), CleanupError> {
        let shared = self.shared.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            // The log's mtime is when the allocation ended: its retention
            // counts from there (see `retention`). Before the bundle goes,
            // which is what marks the log as no longer in use.
            if let Ok(log) = std::fs::OpenOptions::new()
                .append(true)
                .open(shared.log_path(&id))
            {
                let _ = log.set_modified(std::time::SystemTime::now());
            }
            if let Some(net) = shared.network.get() {
                for (ip, _) in net.allocated().into_iter().filter(|(_, a)| *a == id) {
                    shared.dns.set_egress(ip.into(), None);
                }
                net.detach(&id);
            }
            shared.runtime.cgroups().remove(&id)?;
            let b = bundle.unwrap_or_else(|| Bundle::at(shared.bundle_dir(&id), id.clone()));
            if let Err(e) = b.cleanup() {
                // Retention removes it later (see `retention`); its id range
                // is free again at the agent's next start.
                let mark = super::retention::ended_mark(&shared.state_dir.join("bundles"), &id);
                let _ = std::fs::write(mark, "");
                return Err(e.into());
            }
            shared.id_ranges.release(&id);
            if !gc {
                return Ok(());
            }
            match shared.gc_images() {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "freed image layers no container uses"),
                Err(e) => tracing::warn!("image layer gc: {e}"),
            }
            Ok(())
        })
        .await?
    }
}

/// Re-adopts the containers a previous agent process left behind; removes
/// whatever cannot be adopted (no monitor state, or its monitor died without
/// recording an exit), so nothing runs beside what the scheduler asks for.
pub fn adopt_leftovers(shared: &Shared) {
    let dir = shared.state_dir.join("bundles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let bundle = Bundle::at(e.path(), id.clone());
        if let Some(container) = shared.runtime.adopt(bundle.dir(), &id) {
            tracing::info!(alloc = %id, pid = container.pid(), "re-adopted a running container");
            shared
                .adopted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Adopted { bundle, container });
            continue;
        }
        tracing::warn!(alloc = %id, "cleaning up a container left by an earlier agent");
        if let Err(err) = shared.runtime.cgroups().remove(&id) {
            tracing::warn!(alloc = %id, error = %err, "cgroup cleanup");
        }
        if let Err(err) = bundle.cleanup() {
            tracing::warn!(alloc = %id, error = %err, "bundle cleanup");
        }
        // Tell the scheduler, so an allocation it still thinks is stopping ends.
        shared.reporter.update(pb::AllocationReport {
            id: id.clone(),
            state: pb::AllocationPhase::Stopped.word().into(),
            phase: pb::AllocationPhase::Stopped as i32,
            reason: "stopped by a restarted agent (it could not re-adopt it)".into(),
            ..Default::default()
        });
    }
}

/// What the container of an allocation is asked to be.
fn request(alloc: &Alloc) -> ContainerRequest {
    let s: &JobSpec = &alloc.spec;
    ContainerRequest {
        id: alloc.id.clone(),
        hostname: alloc.name.clone(),
        command: s.command.clone(),
        args: s.args.clone(),
        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: s.workdir.clone(),
        cpu_millis: Some(s.resources.cpu.millis()),
        memory_bytes: Some(s.resources.memory.bytes()),
        pids: s.resources.pids.map(i64::from),
        network: match s.network {
            spec::Network::Private => Network::Private,
            spec::Network::Host => Network::Host,
        },
        user: s.user.clone(),
        read_only_rootfs: s.read_only_rootfs,
        capabilities: crate::bundle::CapabilityChanges {
            add: s.security.capabilities.add.clone(),
            drop: {
                let mut drop = s.security.capabilities.drop.clone();
                // No raw sockets: it must not send as another container's
                // address, one that may leave (see `network::guard`).
                if s.egress == spec::Egress::None {
                    drop.push("NET_RAW".into());
                }
                drop
            },
        },
        seccomp: match (&s.security.seccomp, &s.security.seccomp_profile) {
            (spec::SeccompMode::Unconfined, _) => crate::bundle::Seccomp::Unconfined,
            (_, Some(p)) => crate::bundle::Seccomp::Profile(p.clone()),
            (_, None) => crate::bundle::Seccomp::Default,
        },
        user_namespace: None,
        init: s.init,
        files: Vec::new(),
        binds: Vec::new(),
        tmpfs: s
            .tmpfs
            .iter()
            .map(|t| (t.path.clone(), t.size.bytes()))
            .collect(),
    }
}

/// The node's volumes the job mounts, as binds; an error names a volume
/// this agent does not offer, or offers read-only to a mount that writes
/// (the scheduler places by what agents offer: this is a node whose agent
/// restarted with other volumes since).
fn host_binds(
    offered: &[super::HostVolume],
    spec: &JobSpec,
) -> Result<Vec<crate::bundle::HostBind>, StartError> {
    spec.volumes
        .iter()
        .map(|v| {
            let err = |why: &str| StartError::Volume {
                name: v.name.clone(),
                why: why.into(),
            };
            let host = offered.iter().find(|h| h.name == v.name).ok_or_else(|| {
                err("this node's agent offers no such volume (drover-agent run --volume NAME=PATH)")
            })?;
            if host.read_only && !v.read_only {
                return Err(err(
                    "this node offers it read-only; mount it with read_only: true",
                ));
            }
            if !host.unchanged() {
                return Err(err("its host directory is no longer the one offered when the agent started (replaced, or a symlink now): restart the agent to offer it again"));
            }
            Ok(crate::bundle::HostBind {
                source: host.path.clone(),
                destination: v.path.clone(),
                read_only: v.read_only || host.read_only,
            })
        })
        .collect()
}

/// The `/etc/resolv.conf` and `/etc/hosts` a container gets. With private
/// networking: the node's DNS server (see `dns`), or, where it does not
/// serve, the node's resolvers that a container can reach (not loopback
/// ones); its hosts file names it at its address once it has one (see
/// `hosts_file`). With host networking: the node's own files, as Docker does.
fn container_files(shared: &Shared, private: bool, hostname: &str) -> Vec<ContainerFile> {
    let host_resolv = std::fs::read_to_string(super::HOST_RESOLV_CONF).unwrap_or_default();
    let (resolv, hosts) = if private {
        let resolv = match shared.network.get() {
            Some(net) if shared.dns.serving() => super::dns::resolv_conf(net.gateway, &host_resolv),
            // A host whose resolv.conf names only a local stub (systemd-resolved):
            // the stub's own upstreams, as Docker does.
            _ => std::fs::read_to_string(SYSTEMD_RESOLV_CONF)
                .ok()
                .filter(|_| {
                    super::dns::nameservers(&host_resolv)
                        .iter()
                        .all(|ip| ip.is_loopback())
                })
                .unwrap_or(host_resolv.clone())
                .lines()
                .filter(|l| {
                    !super::dns::nameservers(l)
                        .first()
                        .is_some_and(|ip| ip.is_loopback())
                })
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        (resolv, hosts_file(hostname, None))
    } else {
        let hosts =
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(hostname, None));
        (host_resolv, hosts)
    };
    [("/etc/resolv.conf", resolv), ("/etc/hosts", hosts)]
        .into_iter()
        .map(|(path, contents)| ContainerFile {
            path: path.into(),
            contents: contents.into_bytes(),
            ..Default::default()
        })
        .collect()
}

/// The secrets and configs the job mounts, as files, from what the
/// scheduler sent with the desired set; an error names one it did not send.
fn secret_files(shared: &Shared, spec: &JobSpec) -> Result<Vec<ContainerFile>, StartError> {
    let delivered = shared.secrets.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for (kind, list, dir) in [
        ("secret", &spec.secrets, spec::SECRETS_DIR),
        ("config", &spec.configs, ""),
    ] {
        for f in list {
            let data = delivered
                .get(&(kind.to_string(), f.name.clone()))
                .ok_or_else(|| StartError::Secret {
                    kind,
                    name: f.name.clone(),
                })?;
            out.push(ContainerFile {
                path: f.path_or(dir),
                contents: data.data.clone(),
                read_only: true,
                mode: f.mode_bits(),
                secret: kind == "secret",
                uid: f.uid.unwrap_or(0),
                gid: f.gid.unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// systemd-resolved's list of the upstream servers behind its local stub.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// A private-network container's `/etc/hosts`: loopback, and its own name
/// at its address.
fn hosts_file(hostname: &str, ip: Option<IpAddr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// Connections to local `port` that are established or being established,
/// in a `/proc/net/tcp` (or `tcp6`) table.
fn connections_to(table: &str, port: u16) -> usize {
    const ESTABLISHED: &str = "01";
    const SYN_RECV: &str = "03";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && (state == ESTABLISHED || state == SYN_RECV)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_connections_to_the_port_count() {
        // A listener on 8080, two connections to it (one established, one
        // in TIME_WAIT), one established from it to elsewhere, and an IPv6
        // one established to 8080.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0200580A:1F90 0100580A:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0200580A:1F90 0100580A:D432 06 00000000:00000000 03:00000D2B 00000000     0        0 0 3 0
   3: 0200580A:A2C4 0100580A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        assert_eq!(connections_to(v4, 8080), 1);
        assert_eq!(connections_to(v4, 9090), 0);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 0000000000000000FFFF00000200580A:1F90 0000000000000000FFFF00000100580A:D431 01 00000000:00000000
";
        assert_eq!(connections_to(v6, 8080), 1);
        assert_eq!(connections_to("", 8080), 0);
    }
}
