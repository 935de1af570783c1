//! One allocation's life on this node.
//!
//! pending → starting (image, bundle, launch) → running → exited, then per
//! the job's restart policy either starting again after a backoff (doubling
//! from `restart.backoff.initial` up to `max`, reset after a run that lasted
//! at least `max`) or ended: `stopped` after a clean exit, `failed`
//! otherwise. A stop request from the scheduler sends SIGTERM, then SIGKILL
//! after the job's `stop_grace_period`, and removes the cgroup, the overlay
//! mount and the bundle directory before reporting `stopped`.

use super::error::StartError;
use super::{health, Shared};
use crate::bundle::{Bundle, ContainerRequest, Network};
use crate::image::ImageRef;
use crate::runtime::{Container, ExitStatus};
use drover_proto::pb::{self, AllocationPhase};
use drover_proto::spec::{JobSpec, OnDisconnect, RestartPolicy};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Handle on a running allocation's task.
pub struct Runner {
    stop: watch::Sender<Option<String>>,
    /// The longest stop grace allowed, in ms (`u64::MAX`: the job's own).
    grace_cap: Arc<AtomicU64>,
    task: JoinHandle<()>,
    /// What its job asked for when the node loses the scheduler.
    pub on_disconnect: OnDisconnect,
}

impl Runner {
    pub fn spawn(
        shared: Arc<Shared>,
        desired: pb::DesiredAllocation,
    ) -> Result<Runner, StartError> {
        let spec = drover_proto::spec::from_json(&desired.spec_json)?;
        let (stop, stop_rx) = watch::channel(None);
        let grace_cap = Arc::new(AtomicU64::new(u64::MAX));
        let on_disconnect = spec.on_disconnect;
        let life = Life {
            grace_cap: grace_cap.clone(),
            shared,
            id: desired.id,
            name: desired.name,
            spec,
            restarts: 0,
            stop: stop_rx,
            health: AtomicU8::new(0),
            ip: std::sync::Mutex::new(String::new()),
        };
        let task = tokio::spawn(life.run());
        Ok(Runner {
            stop,
            grace_cap,
            task,
            on_disconnect,
        })
    }

    /// Asks the allocation to stop, giving it at most `grace` (instead of
    /// the job's stop grace) before SIGKILL.
    pub fn stop_within(&self, reason: &str, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.grace_cap.fetch_min(ms, Ordering::Relaxed);
        self.stop(reason);
    }

    /// Asks the allocation to stop (idempotent).
    pub fn stop(&self, reason: &str) {
        self.stop.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Life {
    shared: Arc<Shared>,
    id: String,
    name: String,
    spec: JobSpec,
    restarts: u32,
    stop: watch::Receiver<Option<String>>,
    grace_cap: Arc<AtomicU64>,
    /// The health verdict of the current run: 0 none yet, 1 healthy, 2 unhealthy.
    health: AtomicU8,
    /// Its address on the node's container network ("" with host networking).
    ip: std::sync::Mutex<String>,
}

/// How one run of the container ended.
enum RunEnd {
    Exited(ExitStatus),
    /// Killed by the kernel for exceeding its memory limit.
    OomKilled(ExitStatus),
    StartFailed(StartError),
    Stopped(String),
    /// Its health check failed `failure_threshold` times in a row; it was stopped.
    Unhealthy(String, Option<ExitStatus>),
}

impl Life {
    fn report(
        &self,
        phase: AllocationPhase,
        pid: u32,
        exit_code: Option<i32>,
        reason: impl Into<String>,
    ) {
        self.report_with(phase, pid, exit_code, reason, Typed::default());
    }

    /// `report`, with what the scheduler decides by in typed fields.
    fn report_with(
        &self,
        phase: AllocationPhase,
        pid: u32,
        exit_code: Option<i32>,
        reason: impl Into<String>,
        typed: Typed,
    ) {
        let health = match self.health.load(Ordering::Relaxed) {
            1 => pb::Health::Healthy,
            2 => pb::Health::Unhealthy,
            _ => pb::Health::Unknown,
        };
        self.shared.reporter.update(pb::AllocationReport {
            health_detail: typed.health_detail,
            restarting_at_ms: typed.restarting_at_ms,
            id: self.id.clone(),
            state: phase.word().into(),
            phase: phase as i32,
            pid,
            exit_code,
            reason: reason.into(),
            restarts: self.restarts,
            health: health.word().into(),
            health_state: health as i32,
            ip: self.ip.lock().expect("ip lock").clone(),
        });
    }

    /// It runs, and its check (or the mesh's path to it) fails: `why`.
    fn report_unhealthy(&self, pid: i32, why: &str) {
        self.health.store(2, Ordering::Relaxed);
        self.report_with(
            AllocationPhase::Running,
            pid as u32,
            None,
            format!("unhealthy: {why}"),
            Typed::unhealthy(why),
        );
    }

    fn stop_requested(&self) -> Option<String> {
        self.stop.borrow().clone()
    }

    /// The job's stop grace, or less if the stop asked for less.
    fn stop_grace(&self) -> Duration {
        let cap = Duration::from_millis(self.grace_cap.load(Ordering::Relaxed));
        self.spec.stop_grace_period.std().min(cap)
    }

    async fn run(mut self) {
        let policy = self.spec.restart.0.policy;
        let backoff = self.spec.restart.0.backoff.clone();
        let mut delay = backoff.initial.std();
        let mut bundle: Option<Bundle> = None;
        loop {
            if let Some(reason) = self.stop_requested() {
                self.finish(bundle.take(), AllocationPhase::Stopped, None, reason)
                    .await;
                return;
            }
            let started = Instant::now();
            let end = self.run_once(&mut bundle).await;
            let mut typed = Typed::default();
            let (exit_code, reason, clean) = match &end {
                RunEnd::Stopped(reason) => {
                    self.finish(
                        bundle.take(),
                        AllocationPhase::Stopped,
                        None,
                        reason.clone(),
                    )
                    .await;
                    return;
                }
                RunEnd::Exited(status) => {
                    (Some(status.code()), describe(*status), status.success())
                }
                RunEnd::OomKilled(status) => (Some(status.code()), "oom-killed".into(), false),
                RunEnd::StartFailed(e) => (None, e.to_string(), false),
                RunEnd::Unhealthy(why, status) => {
                    typed.health_detail = why.clone();
                    (status.map(|s| s.code()), format!("unhealthy: {why}"), false)
                }
            };
            let again = match policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean,
                RestartPolicy::Never => false,
            };
            if !again {
                let phase = if clean {
                    AllocationPhase::Stopped
                } else {
                    AllocationPhase::Failed
                };
                self.finish(bundle.take(), phase, exit_code, reason).await;
                return;
            }
            if started.elapsed() >= backoff.max.std() {
                delay = backoff.initial.std();
            }
            typed.restarting_at_ms = wall_ms() + delay.as_millis() as i64;
            // The words stay how it ended; `restarting_at_ms` says when it
            // starts again (the CLI shows "restarting in ...").
            self.report_with(AllocationPhase::Failed, 0, exit_code, reason, typed);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_signal(&mut stop) => {}
            }
            delay = (delay * 2).min(backoff.max.std());
            self.restarts += 1;
        }
    }

    /// Prepares (once), starts and waits for the container.
    async fn run_once(&mut self, bundle: &mut Option<Bundle>) -> RunEnd {
        // A container an earlier agent process started is picked up, not
        // started again (see `supervisor::adopt_leftovers`).
        let mut adopted_now = false;
        let container = match self.shared.take_adopted(&self.id) {
            Some(adopted) => {
                *bundle = Some(adopted.bundle);
                adopted_now = true;
                Arc::new(adopted.container)
            }
            None => {
                self.report(AllocationPhase::Starting, 0, None, "");
                if let Err(e) = self.network_ready().await {
                    return RunEnd::StartFailed(e);
                }
                if bundle.is_none() {
                    match self.prepare().await {
                        Ok(b) => *bundle = Some(b),
                        Err(e) => return RunEnd::StartFailed(e),
                    }
                }
                // Pulling can take long; never start what was called off meanwhile.
                if let Some(reason) = self.stop_requested() {
                    return RunEnd::Stopped(reason);
                }
                let b = bundle.as_ref().expect("prepared");
                match self.launch(b).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => return RunEnd::StartFailed(e),
                }
            }
        };
        let pid = container.pid() as u32;
        self.health.store(0, Ordering::Relaxed);
        if adopted_now {
            // Its network was set up by the agent that started it: keep it.
            if let Some(net) = self.shared.network.get() {
                if let Some((ip, _)) = net.allocated().into_iter().find(|(_, a)| *a == self.id) {
                    *self.ip.lock().expect("ip lock") = ip.to_string();
                }
            }
        } else if let Err(e) = self.attach_network(pid as i32).await {
            // A command that ended at once took its network namespace with it:
            // that is an exit, not a network failure.
            if let Ok(Some(status)) = container.try_wait() {
                let _ = self.shared.runtime.cgroups().remove(&self.id);
                return RunEnd::Exited(status);
            }
            let _ = container.stop(std::time::Duration::ZERO).await;
            return RunEnd::StartFailed(e);
        }
        self.report(AllocationPhase::Running, pid, None, "");
        let mut stop = self.stop.clone();
        tokio::select! {
            status = container.wait() => match status {
                Ok(s) => {
                    let cgroups = self.shared.runtime.cgroups();
                    let oom = s == ExitStatus::Signaled(9) && cgroups.oom_kills(&self.id) > 0;
                    let _ = cgroups.remove(&self.id);
                    if oom {
                        RunEnd::OomKilled(s)
                    } else {
                        RunEnd::Exited(s)
                    }
                }
                Err(e) => RunEnd::StartFailed(StartError::Wait(e)),
            },
            why = self.watch_health(pid as i32) => {
                let grace = self.spec.stop_grace_period.std();
                let status = container.stop(grace).await.ok();
                RunEnd::Unhealthy(why, status)
            }
            _ = stop_signal(&mut stop) => {
                let reason = self.stop_requested().unwrap_or_default();
                self.report(AllocationPhase::Stopping, pid, None, reason.clone());
                let grace = self.stop_grace();
                if self.spec.expose.is_some() {
                    // Out of service first: the scheduler already took it out of the
                    // endpoint sets; give every node's mesh a moment to stop sending
                    // new connections before it is asked to finish.
                    tokio::time::sleep(DEREGISTRATION_DELAY.min(grace)).await;
                }
                match container.stop(grace).await {
                    Ok(s) => RunEnd::Stopped(format!("{reason} ({})", describe(s))),
                    Err(e) => RunEnd::Stopped(format!("{reason} (stop: {e})")),
                }
            }
        }
    }

    /// Gives a private-network container its address on the node's bridge.
    async fn attach_network(&self, pid: i32) -> Result<(), StartError> {
        if self.spec.network != drover_proto::spec::Network::Private {
            return Ok(());
        }
        let shared = self.shared.clone();
        let id = self.id.clone();
        let access = self.spec.security.control_plane_access;
        let ip = tokio::task::spawn_blocking(move || {
            // As before: "network: " and the node's recorded problem.
            let net = shared
                .private_network()
                .map_err(|e| StartError::NodeNetwork(format!("network: {e}")))?;
            match net {
                Some(net) => Ok::<_, StartError>(Some(net.attach(&id, pid, access)?)),
                None => Ok(None),
            }
        })
        .await
        .map_err(StartError::task("network"))??;
        if let Some(ip) = ip {
            *self.ip.lock().expect("ip lock") = ip.to_string();
        }
        Ok(())
    }

    /// Refuses to start a container with private networking while the
    /// node's network cannot be set up (see `Shared::private_network`).
    async fn network_ready(&self) -> Result<(), StartError> {
        if self.spec.network != drover_proto::spec::Network::Private {
            return Ok(());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.private_network().map(|_| ()))
            .await
            .map_err(StartError::task("network"))?
            .map_err(StartError::NodeNetwork)
    }

    /// Probes the container per its health check; returns why once it is unhealthy.
    /// Without a check it never returns.
    async fn watch_health(&self, pid: i32) -> String {
        let Some(check) = self.spec.health.clone() else {
            return match self.published_at() {
                Some(addr) => self.watch_reach(pid, addr).await,
                None => std::future::pending().await,
            };
        };
        let reachable_at = self.published_at();
        let mut verdict = health::Verdict::default();
        let target = health::Target {
            pid,
            id: self.id.clone(),
            bundle: self.shared.bundle_dir(&self.id),
            runtime: self.shared.runtime.clone(),
        };
        loop {
            let mut probe = health::probe(&check, &target, self.spec.network).await;
            if let (Ok(()), Some(addr)) = (&probe, reachable_at) {
                // Healthy inside; is it where the routing mesh sends traffic?
                probe = health::reach(addr, check.timeout.std()).await;
            }
            if verdict.record(&probe, check.failure_threshold) {
                match (verdict.healthy, probe) {
                    (Some(true), _) => {
                        self.health.store(1, Ordering::Relaxed);
                        self.report(AllocationPhase::Running, pid as u32, None, "");
                    }
                    (Some(false), Err(why)) => {
                        self.report_unhealthy(pid, &why);
                        return why;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(check.interval.std()).await;
        }
    }

    /// Without a health check, a published replica is still watched on the
    /// mesh's path: once it has answered there, [`REACH_THRESHOLD`] failed
    /// connections in a row make it unhealthy. Never before its first
    /// answer: without a check, nothing says how long it may take to start.
    async fn watch_reach(&self, pid: i32, addr: std::net::SocketAddr) -> String {
        let mut verdict = health::Verdict::default();
        loop {
            tokio::time::sleep(REACH_INTERVAL).await;
            let probe = health::reach(addr, REACH_TIMEOUT).await;
            if verdict.healthy.is_none() && probe.is_err() {
                continue;
            }
            if verdict.record(&probe, REACH_THRESHOLD) && verdict.healthy == Some(false) {
                let why = probe.err().unwrap_or_default();
                self.report_unhealthy(pid, &why);
                return why;
            }
        }
    }

    /// Where the routing mesh reaches this replica, if it publishes a port
    /// and has its own address (a private network).
    fn published_at(&self) -> Option<std::net::SocketAddr> {
        let (_, port) = self.spec.exposed_target()?;
        let ip: std::net::IpAddr = self.ip.lock().expect("ip lock").parse().ok()?;
        Some(std::net::SocketAddr::new(ip, port))
    }

    async fn prepare(&self) -> Result<Bundle, StartError> {
        let shared = self.shared.clone();
        let image = self.spec.image.clone();
        let mut req = self.request();
        let private = self.spec.network == drover_proto::spec::Network::Private;
        if private
            && self
                .spec
                .security
                .user_namespace
                .unwrap_or(shared.user_namespaces)
        {
            req.user_namespace = Some(shared.id_ranges.allocate(&self.id)?);
        }
        let dir = shared.bundle_dir(&self.id);
        tokio::task::spawn_blocking(move || {
            let r: ImageRef = image.parse()?;
            let _in_use = shared.image_use.read().unwrap_or_else(|e| e.into_inner());
            let img = shared.images.pull(&r)?;
            Ok(Bundle::create(&dir, &img, &req)?)
        })
        .await
        .map_err(StartError::task("prepare"))?
    }

    async fn launch(&self, bundle: &Bundle) -> Result<Container, StartError> {
        let fenced_job = self.spec.on_disconnect == OnDisconnect::Stop;
        let since = self.shared.since_acknowledged();
        if fenced_job && drover_proto::fencing::must_fence(since, self.shared.node_timeout()) {
            // Never start a replica the scheduler may be starting elsewhere.
            return Err(StartError::Fenced {
                secs: since.as_secs_f64(),
            });
        }
        let fence_clock = fenced_job.then(|| crate::fence_clock::file(&self.shared.state_dir));
        let shared = self.shared.clone();
        let dir = bundle.dir().to_path_buf();
        let id = self.id.clone();
        let log_path = shared.log_path(&self.id);
        tokio::task::spawn_blocking(move || {
            if let Some(monitor) = &shared.monitor {
                return Ok(shared.runtime.start_monitored(
                    monitor,
                    &dir,
                    &id,
                    &log_path,
                    fence_clock.as_deref(),
                )?);
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|source| StartError::Log {
                    path: log_path.clone(),
                    source,
                })?;
            Ok(shared.runtime.start(&dir, &id, log)?)
        })
        .await
        .map_err(StartError::task("start"))?
    }

    fn request(&self) -> ContainerRequest {
        let s = &self.spec;
        ContainerRequest {
            id: self.id.clone(),
            hostname: self.name.clone(),
            command: s.command.clone(),
            args: s.args.clone(),
            env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            workdir: s.workdir.clone(),
            cpu_millis: Some(s.resources.cpu.millis()),
            memory_bytes: Some(s.resources.memory.bytes()),
            pids: s.resources.pids.map(i64::from),
            network: match s.network {
                drover_proto::spec::Network::Private => Network::Private,
                drover_proto::spec::Network::Host => Network::Host,
            },
            user: s.user.clone(),
            read_only_rootfs: s.read_only_rootfs,
            capabilities: crate::bundle::CapabilityChanges {
                add: s.security.capabilities.add.clone(),
                drop: s.security.capabilities.drop.clone(),
            },
            seccomp: match (&s.security.seccomp, &s.security.seccomp_profile) {
                (drover_proto::spec::SeccompMode::Unconfined, _) => {
                    crate::bundle::Seccomp::Unconfined
                }
                (_, Some(p)) => crate::bundle::Seccomp::Profile(p.clone()),
                (_, None) => crate::bundle::Seccomp::Default,
            },
            user_namespace: None,
        }
    }

    /// Removes everything of the container and reports the final state.
    async fn finish(
        &self,
        bundle: Option<Bundle>,
        phase: AllocationPhase,
        exit_code: Option<i32>,
        reason: String,
    ) {
        let shared = self.shared.clone();
        let id = self.id.clone();
        self.ip.lock().expect("ip lock").clear();
        let cleaned = tokio::task::spawn_blocking(move || {
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
                net.detach(&id);
            }
            shared
                .runtime
                .cgroups()
                .remove(&id)
                .map_err(|e| e.to_string())?;
            let b = bundle.unwrap_or_else(|| Bundle::at(shared.bundle_dir(&id), id.clone()));
            if let Err(e) = b.cleanup() {
                // Retention removes it later (see `retention`); its id range
                // is free again at the agent's next start.
                let mark = super::retention::ended_mark(&shared.state_dir.join("bundles"), &id);
                let _ = std::fs::write(mark, "");
                return Err(e.to_string());
            }
            shared.id_ranges.release(&id);
            match shared.gc_images() {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "freed image layers no container uses"),
                Err(e) => tracing::warn!("image layer gc: {e}"),
            }
            Ok::<_, String>(())
        })
        .await;
        let reason = match cleaned {
            Ok(Ok(())) => reason,
            Ok(Err(e)) => format!("{reason}; cleanup: {e}"),
            Err(e) => format!("{reason}; cleanup: {e}"),
        };
        self.report(phase, 0, exit_code, reason);
    }
}

/// What a report says in typed fields besides its words, for the scheduler
/// to decide by (it parses no prose).
#[derive(Debug, Default)]
struct Typed {
    health_detail: String,
    restarting_at_ms: i64,
}

/// Now, in ms since the epoch (what the scheduler's times are in).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Typed {
    fn unhealthy(why: &str) -> Typed {
        Typed {
            health_detail: why.to_string(),
            ..Default::default()
        }
    }
}

/// How often a published replica without a health check is connected to
/// from the node, how long each try may take, and how many failures in a
/// row make it unhealthy.
const REACH_INTERVAL: Duration = Duration::from_secs(5);
const REACH_TIMEOUT: Duration = Duration::from_secs(2);
const REACH_THRESHOLD: u32 = 3;

/// How long a published replica stays up after leaving the endpoint sets,
/// before it is signalled: enough for every node's mesh to hear of it.
const DEREGISTRATION_DELAY: std::time::Duration = std::time::Duration::from_millis(1000);

/// Resolves once a stop was requested (holding no borrow of the channel).
async fn stop_signal(stop: &mut watch::Receiver<Option<String>>) {
    let _ = stop.wait_for(|r| r.is_some()).await.map(|_| ());
}

fn describe(s: ExitStatus) -> String {
    match s {
        ExitStatus::Exited(c) => format!("exited with code {c}"),
        ExitStatus::Signaled(sig) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            format!("killed by {name}")
        }
    }
}
