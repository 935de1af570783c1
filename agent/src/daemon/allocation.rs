//! One allocation's life on this node.
//!
//! pending → starting (image, bundle, launch) → running → exited, then per
//! the job's restart policy either starting again after a backoff (doubling
//! from `restart.backoff.initial` up to `max`, reset after a run that lasted
//! at least `max`) or ended: `stopped` after a clean exit, `failed`
//! otherwise. A stop request from the scheduler sends SIGTERM, then SIGKILL
//! after the job's `stop_grace_period`, and removes the cgroup, the overlay
//! mount and the bundle directory before reporting `stopped`.
//!
//! What to do and when is decided here; doing it (images, bundles,
//! processes, addresses) is the [`Driver`]'s, so the unit tests below run
//! the same life against a fake one.

use super::driver::{Alloc, Driver, Task};
use super::error::StartError;
use super::health;
use super::reporter::Reporter;
use super::restart::{AfterRun, Restarts};
use crate::runtime::ExitStatus;
use drover_proto::pb::{self, AllocationPhase};
use drover_proto::spec::OnDisconnect;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    /// Starts the life of allocation `desired`, through `driver`, reporting
    /// what it does to `reporter`.
    pub fn spawn<D: Driver>(
        driver: Arc<D>,
        reporter: Reporter,
        desired: pb::DesiredAllocation,
    ) -> Result<Runner, StartError> {
        let spec = drover_proto::spec::from_json(&desired.spec_json)?;
        let (stop, stop_rx) = watch::channel(None);
        let grace_cap = Arc::new(AtomicU64::new(u64::MAX));
        let on_disconnect = spec.on_disconnect;
        let life = Life {
            grace_cap: grace_cap.clone(),
            driver,
            reporter,
            alloc: Alloc {
                id: desired.id,
                name: desired.name,
                spec,
            },
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

struct Life<D: Driver> {
    driver: Arc<D>,
    reporter: Reporter,
    alloc: Alloc,
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
    /// Stopped as asked; `killed`: only SIGKILL at the end of the grace did.
    Stopped {
        reason: String,
        killed: bool,
    },
    /// Its health check failed `failure_threshold` times in a row; it was stopped.
    Unhealthy(String, Option<ExitStatus>),
    /// It wrote more than `resources.disk` to its root filesystem; it was
    /// stopped, and starts again (if at all) from a fresh one.
    DiskFull(String, Option<ExitStatus>),
}

impl<D: Driver> Life<D> {
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
        self.reporter.update(pb::AllocationReport {
            killed_at_grace: typed.killed_at_grace,
            health_detail: typed.health_detail,
            restarting_at_ms: typed.restarting_at_ms,
            id: self.alloc.id.clone(),
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
        self.alloc.spec.stop_grace_period.std().min(cap)
    }

    async fn run(mut self) {
        let mut restarts = Restarts::new(&self.alloc.spec.restart.0);
        let mut prepared: Option<D::Prepared> = None;
        loop {
            if let Some(reason) = self.stop_requested() {
                let end = (AllocationPhase::Stopped, None, reason);
                self.finish(prepared.take(), end, Typed::default()).await;
                return;
            }
            let started = Instant::now();
            let end = self.run_once(&mut prepared).await;
            let mut typed = Typed::default();
            let (exit_code, reason, clean) = match &end {
                RunEnd::Stopped { reason, killed } => {
                    let typed = Typed {
                        killed_at_grace: *killed,
                        ..Typed::default()
                    };
                    let end = (AllocationPhase::Stopped, None, reason.clone());
                    self.finish(prepared.take(), end, typed).await;
                    return;
                }
                RunEnd::Exited(status) => {
                    (Some(status.code()), describe(*status), status.success())
                }
                RunEnd::OomKilled(status) => (Some(status.code()), "oom-killed".into(), false),
                RunEnd::StartFailed(e) => (None, e.to_string(), false),
                RunEnd::DiskFull(why, status) => {
                    typed.killed_at_grace = *status == Some(ExitStatus::Signaled(libc::SIGKILL));
                    // What it wrote goes: a fresh root at the next start
                    // (the image stays). Not while it may still run.
                    if status.is_some() {
                        if let Err(e) = self.driver.discard(&self.alloc.id, prepared.take()).await {
                            tracing::warn!(alloc = %self.alloc.id, error = %e, "discarding a root over its disk limit");
                        }
                    }
                    (
                        status.map(|s| s.code()),
                        format!("ephemeral disk limit: {why}"),
                        false,
                    )
                }
                RunEnd::Unhealthy(why, status) => {
                    typed.health_detail = why.clone();
                    // Stopped for failing its check: it too may have needed SIGKILL.
                    typed.killed_at_grace = *status == Some(ExitStatus::Signaled(libc::SIGKILL));
                    (status.map(|s| s.code()), format!("unhealthy: {why}"), false)
                }
            };
            let delay = match restarts.after(clean, started.elapsed()) {
                AfterRun::End(phase) => {
                    let end = (phase, exit_code, reason);
                    self.finish(prepared.take(), end, Typed::default()).await;
                    return;
                }
                AfterRun::Restart { after } => after,
            };
            typed.restarting_at_ms = wall_ms() + delay.as_millis() as i64;
            // The words stay how it ended; `restarting_at_ms` says when it
            // starts again (the CLI shows "restarting in ...").
            self.report_with(AllocationPhase::Failed, 0, exit_code, reason, typed);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_signal(&mut stop) => {}
            }
            self.restarts += 1;
        }
    }

    /// Prepares (once), starts and waits for the container.
    async fn run_once(&mut self, prepared: &mut Option<D::Prepared>) -> RunEnd {
        // A container an earlier agent process started is picked up, not
        // started again (see `node_driver::adopt_leftovers`).
        let mut adopted_now = false;
        let task = match self.driver.adopt(&self.alloc.id) {
            Some(adopted) => {
                *prepared = Some(adopted.prepared);
                adopted_now = true;
                *self.ip.lock().expect("ip lock") =
                    adopted.ip.map(|ip| ip.to_string()).unwrap_or_default();
                adopted.task
            }
            None => {
                self.report(AllocationPhase::Starting, 0, None, "");
                if let Err(e) = self.driver.network_ready(&self.alloc).await {
                    return RunEnd::StartFailed(e);
                }
                if prepared.is_none() {
                    match self.driver.prepare(&self.alloc).await {
                        Ok(p) => *prepared = Some(p),
                        Err(e) => return RunEnd::StartFailed(e),
                    }
                }
                // Pulling can take long; never start what was called off meanwhile.
                if let Some(reason) = self.stop_requested() {
                    return RunEnd::Stopped {
                        reason,
                        killed: false,
                    };
                }
                if let Err(e) = self.may_start() {
                    return RunEnd::StartFailed(e);
                }
                let p = prepared.as_ref().expect("prepared");
                match self.driver.start(&self.alloc, p).await {
                    Ok(t) => t,
                    Err(e) => return RunEnd::StartFailed(e),
                }
            }
        };
        let pid = task.pid();
        self.health.store(0, Ordering::Relaxed);
        if !adopted_now {
            match self.driver.attach_network(&self.alloc, pid).await {
                Ok(ip) => {
                    if let Some(ip) = ip {
                        *self.ip.lock().expect("ip lock") = ip.to_string();
                    }
                }
                Err(e) => {
                    // A command that ended at once took its network namespace
                    // with it: that is an exit, not a network failure.
                    if let Ok(Some(status)) = task.try_wait() {
                        self.driver.reap(&self.alloc.id, status);
                        return RunEnd::Exited(status);
                    }
                    let _ = task.stop(Duration::ZERO).await;
                    return RunEnd::StartFailed(e);
                }
            }
        }
        self.report(AllocationPhase::Running, pid as u32, None, "");
        let mut stop = self.stop.clone();
        tokio::select! {
            status = task.wait() => match status {
                Ok(s) if self.driver.reap(&self.alloc.id, s) => RunEnd::OomKilled(s),
                Ok(s) => RunEnd::Exited(s),
                Err(e) => RunEnd::StartFailed(StartError::Wait(e)),
            },
            why = self.watch_health(pid) => {
                let grace = self.alloc.spec.stop_grace_period.std();
                let status = task.stop(grace).await.ok();
                RunEnd::Unhealthy(why, status)
            }
            why = self.watch_disk() => {
                self.report(AllocationPhase::Stopping, pid as u32, None, why.clone());
                let grace = self.alloc.spec.stop_grace_period.std();
                let status = task.stop(grace).await.ok();
                RunEnd::DiskFull(why, status)
            }
            _ = stop_signal(&mut stop) => {
                let reason = self.stop_requested().unwrap_or_default();
                self.report(AllocationPhase::Stopping, pid as u32, None, reason.clone());
                let grace = self.stop_grace();
                if self.alloc.spec.expose.is_some() {
                    // Out of service first: the scheduler already took it out of the
                    // endpoint sets; give every node's mesh a moment to stop sending
                    // new connections before it is asked to finish, unless it has
                    // none open (a mesh that has not heard yet and connects now is
                    // refused once it stops listening, and tries another replica).
                    self.deregister(pid, DEREGISTRATION_DELAY.min(grace)).await;
                }
                match task.stop(grace).await {
                    Ok(s) => RunEnd::Stopped {
                        reason: format!("{reason} ({})", describe(s)),
                        killed: s == ExitStatus::Signaled(libc::SIGKILL),
                    },
                    Err(e) => RunEnd::Stopped {
                        reason: format!("{reason} (stop: {e})"),
                        killed: false,
                    },
                }
            }
        }
    }

    /// Waits up to `most` for the published replica `pid` to have no
    /// connection open to its target port.
    async fn deregister(&self, pid: i32, most: Duration) {
        let Some((_, port)) = self.alloc.spec.exposed_target() else {
            return;
        };
        let until = Instant::now() + most;
        while Instant::now() < until && self.driver.open_connections(pid, port) > 0 {
            tokio::time::sleep(DEREGISTRATION_POLL.min(until - Instant::now())).await;
        }
    }

    /// Never starts a replica the scheduler may be starting elsewhere: a
    /// job that is stopped when its node loses the scheduler is not started
    /// while no leader has acknowledged this node for the node timeout.
    fn may_start(&self) -> Result<(), StartError> {
        if self.alloc.spec.on_disconnect != OnDisconnect::Stop {
            return Ok(());
        }
        let since = self.driver.since_acknowledged();
        if drover_proto::fencing::must_fence(since, self.driver.node_timeout()) {
            return Err(StartError::Fenced {
                secs: since.as_secs_f64(),
            });
        }
        Ok(())
    }

    /// Probes the container per its health check; returns why once it is unhealthy.
    /// Without a check it never returns.
    async fn watch_health(&self, pid: i32) -> String {
        let Some(check) = self.alloc.spec.health.clone() else {
            return match self.published_at() {
                Some(addr) => self.watch_reach(pid, addr).await,
                None => std::future::pending().await,
            };
        };
        let reachable_at = self.published_at();
        let mut verdict = health::Verdict::default();
        loop {
            let mut probe = self.driver.probe(&check, &self.alloc, pid).await;
            if let (Ok(()), Some(addr)) = (&probe, reachable_at) {
                // Healthy inside; is it where the routing mesh sends traffic?
                probe = self.driver.reach(addr, check.timeout.std()).await;
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

    /// With `resources.disk`, measures what the container wrote to its root
    /// filesystem every [`DISK_CHECK`]; returns why once it is over.
    /// Without the limit it never returns.
    async fn watch_disk(&self) -> String {
        let Some(limit) = self.alloc.spec.resources.disk else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(DISK_CHECK).await;
            if let Some(used) = self.driver.disk_used(&self.alloc.id, limit.bytes()).await {
                if used == super::resources::TOO_DEEP {
                    return format!(
                        "its root filesystem is nested too deep to measure against resources.disk {limit}"
                    );
                }
                if used > limit.bytes() {
                    return format!(
                        "wrote {} or more to its root filesystem, over resources.disk {limit}",
                        drover_proto::quantity::Size(used)
                    );
                }
            }
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
            let probe = self.driver.reach(addr, REACH_TIMEOUT).await;
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
        let (_, port) = self.alloc.spec.exposed_target()?;
        let ip: std::net::IpAddr = self.ip.lock().expect("ip lock").parse().ok()?;
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// Removes everything of the container and reports how it ended.
    async fn finish(
        &self,
        prepared: Option<D::Prepared>,
        (phase, exit_code, reason): (AllocationPhase, Option<i32>, String),
        typed: Typed,
    ) {
        self.ip.lock().expect("ip lock").clear();
        let reason = match self.driver.cleanup(&self.alloc.id, prepared).await {
            Ok(()) => reason,
            Err(e) => format!("{reason}; cleanup: {e}"),
        };
        self.report_with(phase, 0, exit_code, reason, typed);
    }
}

/// What a report says in typed fields besides its words, for the scheduler
/// to decide by (it parses no prose).
#[derive(Debug, Default)]
struct Typed {
    health_detail: String,
    restarting_at_ms: i64,
    /// Stopped only by SIGKILL at the end of its grace.
    killed_at_grace: bool,
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

/// How often what a container with `resources.disk` wrote is measured.
const DISK_CHECK: Duration = Duration::from_secs(5);

/// How often a published replica without a health check is connected to
/// from the node, how long each try may take, and how many failures in a
/// row make it unhealthy.
const REACH_INTERVAL: Duration = Duration::from_secs(5);
const REACH_TIMEOUT: Duration = Duration::from_secs(2);
const REACH_THRESHOLD: u32 = 3;

/// How long a published replica with open connections stays up after
/// leaving the endpoint sets, before it is signalled: enough for every
/// node's mesh to hear of it (it is signalled sooner once it has none).
const DEREGISTRATION_DELAY: std::time::Duration = std::time::Duration::from_millis(1000);
/// How often a leaving replica's open connections are counted meanwhile.
const DEREGISTRATION_POLL: std::time::Duration = std::time::Duration::from_millis(50);

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
