//! A driver that runs no containers, for unit tests of the allocation runner
//! and the supervisor: each start follows a script ([`Run`]), health checks
//! answer from a script, and everything done is logged with the (tokio,
//! pausable) time it was done at.

use super::driver::{Adoption, Alloc, Driver, Task};
use super::error::{CleanupError, StartError};
use super::health::Probe;
use crate::network::NetworkError;
use crate::runtime::{ExitStatus, RuntimeError};
use drover_proto::spec::Health;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How one start of a container goes.
#[derive(Clone, Copy, Debug)]
pub enum Run {
    /// It runs until stopped; SIGTERM ends it.
    UntilStopped,
    /// It ignores SIGTERM (a shell as PID 1): only SIGKILL ends it.
    IgnoresTerm,
    /// It exits by itself, `after` its start.
    Exits { after: Duration, status: ExitStatus },
    /// The kernel kills it for exceeding its memory limit, `after` its start.
    OomKilled { after: Duration },
    /// The runtime refuses to start it.
    FailsToStart,
    /// It starts, and has exited before its network could be attached.
    ExitsBeforeAttach,
}

#[derive(Default)]
struct State {
    /// How each allocation's next starts go (then `UntilStopped`).
    runs: HashMap<String, VecDeque<Run>>,
    /// What each allocation's health checks answer, in turn (then healthy).
    probes: HashMap<String, VecDeque<Probe>>,
    /// How long preparing (pulling) takes.
    prepare_takes: Duration,
    /// Containers "a previous agent" left running, by allocation.
    adoptable: HashMap<String, Adoption<FakeDriver>>,
    /// Allocations with a bundle on "disk".
    traces: HashSet<String>,
    /// Allocations whose last exit was an OOM kill, until reaped.
    oom: HashSet<String>,
    /// What each allocation's writable layer takes, from its next start on.
    disk: HashMap<String, u64>,
    /// Until when each allocation's container has connections open.
    connected_until: HashMap<String, Instant>,
    /// Pids of containers that exited before their network was attached.
    gone: HashSet<i32>,
    since_acknowledged: Duration,
    node_timeout: Duration,
    next_pid: i32,
    /// Which allocation each pid is.
    pids: HashMap<i32, String>,
}

/// See the module doc.
#[derive(Clone)]
pub struct FakeDriver {
    state: Arc<Mutex<State>>,
    log: Log,
}

/// What the driver did, with when.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    fn add(&self, what: String) {
        self.0.lock().unwrap().push((Instant::now(), what));
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// When each entry equal to `what` was made.
    pub fn times_of(&self, what: &str) -> Vec<Instant> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(_, w)| w == what)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn count(&self, what: &str) -> usize {
        self.times_of(what).len()
    }
}

impl Default for FakeDriver {
    fn default() -> Self {
        let state = State {
            node_timeout: Duration::from_secs(5),
            next_pid: 100,
            ..Default::default()
        };
        FakeDriver {
            state: Arc::new(Mutex::new(state)),
            log: Log::default(),
        }
    }
}

impl FakeDriver {
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The next starts of allocation `id` go like `runs`, in turn.
    pub fn script(&self, id: &str, runs: &[Run]) {
        let mut s = self.state.lock().unwrap();
        s.runs.entry(id.into()).or_default().extend(runs);
    }

    /// The next health checks of allocation `id` answer `probes`, in turn.
    pub fn probes(&self, id: &str, probes: &[Probe]) {
        let mut s = self.state.lock().unwrap();
        s.probes
            .entry(id.into())
            .or_default()
            .extend(probes.iter().cloned());
    }

    /// Allocation `id` has connections open for `d` from now.
    pub fn connected_for(&self, id: &str, d: Duration) {
        let mut s = self.state.lock().unwrap();
        s.connected_until.insert(id.into(), Instant::now() + d);
    }

    /// `id`'s container has written `bytes` (until its bundle is cleaned up).
    pub fn set_disk_used(&self, id: &str, bytes: u64) {
        self.state.lock().unwrap().disk.insert(id.into(), bytes);
    }

    pub fn set_prepare_takes(&self, d: Duration) {
        self.state.lock().unwrap().prepare_takes = d;
    }

    /// No leader has acknowledged the node for `d`.
    pub fn set_since_acknowledged(&self, d: Duration) {
        self.state.lock().unwrap().since_acknowledged = d;
    }

    /// Something of allocation `id` is on disk (its bundle).
    pub fn leave_traces(&self, id: &str) {
        self.state.lock().unwrap().traces.insert(id.into());
    }

    /// "A previous agent" left allocation `id` running; returns its pid.
    pub fn leave_running(&self, id: &str, ip: Option<IpAddr>) -> i32 {
        let task = self.task(id, Run::UntilStopped);
        let pid = task.pid;
        let mut s = self.state.lock().unwrap();
        s.traces.insert(id.into());
        s.adoptable.insert(
            id.into(),
            Adoption {
                prepared: format!("bundle of {id}"),
                task,
                ip,
            },
        );
        pid
    }

    fn task(&self, id: &str, run: Run) -> FakeTask {
        let pid = {
            let mut s = self.state.lock().unwrap();
            s.next_pid += 1;
            let pid = s.next_pid;
            s.pids.insert(pid, id.to_string());
            pid
        };
        let (exit, _) = watch::channel(None);
        let task = FakeTask {
            id: id.to_string(),
            pid,
            exit,
            ignores_term: matches!(run, Run::IgnoresTerm),
            log: self.log.clone(),
        };
        let ends = match run {
            Run::Exits { after, status } => Some((after, status)),
            Run::OomKilled { after } => Some((after, ExitStatus::Signaled(9))),
            Run::ExitsBeforeAttach => {
                task.exit.send_replace(Some(ExitStatus::Exited(0)));
                self.state.lock().unwrap().gone.insert(pid);
                None
            }
            _ => None,
        };
        if let Some((after, status)) = ends {
            let exit = task.exit.clone();
            let state = self.state.clone();
            let oom = matches!(run, Run::OomKilled { .. });
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if oom {
                    state.lock().unwrap().oom.insert(id);
                }
                exit.send_if_modified(|s| s.is_none() && s.replace(status).is_none());
            });
        }
        task
    }
}

/// A container that is only a channel for its exit status.
pub struct FakeTask {
    id: String,
    pid: i32,
    exit: watch::Sender<Option<ExitStatus>>,
    ignores_term: bool,
    log: Log,
}

impl FakeTask {
    fn end(&self, status: ExitStatus) -> ExitStatus {
        self.exit
            .send_if_modified(|s| s.is_none() && s.replace(status).is_none());
        self.exit.borrow().expect("ended")
    }
}

impl Task for FakeTask {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn try_wait(&self) -> Result<Option<ExitStatus>, RuntimeError> {
        Ok(*self.exit.borrow())
    }

    async fn wait(&self) -> Result<ExitStatus, RuntimeError> {
        let mut rx = self.exit.subscribe();
        let status = rx.wait_for(|s| s.is_some()).await.map(|s| s.expect("some"));
        status.map_err(|_| RuntimeError::Sys {
            id: self.id.clone(),
            op: "wait",
            source: std::io::Error::other("gone"),
        })
    }

    async fn stop(&self, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        if let Some(s) = *self.exit.borrow() {
            return Ok(s);
        }
        self.log.add(format!("term {}", self.id));
        if !self.ignores_term {
            return Ok(self.end(ExitStatus::Signaled(15)));
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(s) => s,
            Err(_) => {
                self.log.add(format!("kill {}", self.id));
                Ok(self.end(ExitStatus::Signaled(9)))
            }
        }
    }
}

impl Driver for FakeDriver {
    /// A fake bundle: its description.
    type Prepared = String;
    type Task = FakeTask;

    async fn network_ready(&self, _alloc: &Alloc) -> Result<(), StartError> {
        Ok(())
    }

    async fn prepare(&self, alloc: &Alloc) -> Result<String, StartError> {
        self.log.add(format!("prepare {}", alloc.id));
        let takes = self.state.lock().unwrap().prepare_takes;
        tokio::time::sleep(takes).await;
        self.state.lock().unwrap().traces.insert(alloc.id.clone());
        Ok(format!("bundle of {}", alloc.id))
    }

    async fn start(&self, alloc: &Alloc, _prepared: &String) -> Result<FakeTask, StartError> {
        self.log.add(format!("start {}", alloc.id));
        let run = {
            let mut s = self.state.lock().unwrap();
            s.runs.get_mut(&alloc.id).and_then(|r| r.pop_front())
        };
        match run.unwrap_or(Run::UntilStopped) {
            Run::FailsToStart => Err(StartError::Runtime(RuntimeError::Exec {
                id: alloc.id.clone(),
                program: "/no/such/program".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })),
            run => Ok(self.task(&alloc.id, run)),
        }
    }

    async fn attach_network(&self, alloc: &Alloc, pid: i32) -> Result<Option<IpAddr>, StartError> {
        if alloc.spec.network != drover_proto::spec::Network::Private {
            return Ok(None);
        }
        // The namespace of a container that already exited is gone.
        if self.state.lock().unwrap().gone.contains(&pid) {
            return Err(StartError::Attach(NetworkError::Io {
                path: format!("/proc/{pid}/ns/net"),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }));
        }
        Ok(Some(IpAddr::from([10, 0, 0, (pid % 250) as u8])))
    }

    fn reap(&self, id: &str, _status: ExitStatus) -> bool {
        self.log.add(format!("reap {id}"));
        self.state.lock().unwrap().oom.remove(id)
    }

    async fn probe(&self, _check: &Health, alloc: &Alloc, _pid: i32) -> Probe {
        let mut s = self.state.lock().unwrap();
        let next = s.probes.get_mut(&alloc.id).and_then(|p| p.pop_front());
        next.unwrap_or(Ok(()))
    }

    async fn reach(&self, _addr: SocketAddr, _timeout: Duration) -> Probe {
        Ok(())
    }

    fn open_connections(&self, pid: i32, _port: u16) -> usize {
        let s = self.state.lock().unwrap();
        let id = s.pids.get(&pid);
        let open = id
            .and_then(|id| s.connected_until.get(id))
            .is_some_and(|until| Instant::now() < *until);
        usize::from(open)
    }

    async fn discard(&self, id: &str, prepared: Option<String>) -> Result<(), CleanupError> {
        self.cleanup(id, prepared).await
    }

    async fn disk_used(&self, id: &str, _stop_after: u64) -> Option<u64> {
        Some(
            self.state
                .lock()
                .unwrap()
                .disk
                .get(id)
                .copied()
                .unwrap_or(0),
        )
    }

    async fn cleanup(&self, id: &str, _prepared: Option<String>) -> Result<(), CleanupError> {
        self.log.add(format!("cleanup {id}"));
        let mut s = self.state.lock().unwrap();
        s.traces.remove(id);
        s.disk.remove(id);
        Ok(())
    }

    fn adopt(&self, id: &str) -> Option<Adoption<Self>> {
        let adopted = self.state.lock().unwrap().adoptable.remove(id)?;
        self.log.add(format!("adopt {id}"));
        Some(adopted)
    }

    fn disown_except(&self, wanted: &HashSet<String>) {
        let mut s = self.state.lock().unwrap();
        let unwanted: Vec<String> = s
            .adoptable
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in unwanted {
            s.adoptable.remove(&id);
            s.traces.remove(&id);
            self.log.add(format!("disown {id}"));
        }
    }

    fn has_traces(&self, id: &str) -> bool {
        self.state.lock().unwrap().traces.contains(id)
    }

    fn since_acknowledged(&self) -> Duration {
        self.state.lock().unwrap().since_acknowledged
    }

    fn node_timeout(&self) -> Duration {
        self.state.lock().unwrap().node_timeout
    }
}
