//! The seam between an allocation's life and its effects on the node.
//!
//! `allocation` decides what happens and when (start, watch health,
//! restart after a backoff, stop within a grace, report); a [`Driver`] does
//! it: pulls the image and writes the bundle, starts the container, gives it
//! an address, probes it, and removes what it left. The agent's driver is
//! `node_driver::NodeDriver` (namespaces, cgroups, overlayfs, the node's
//! bridge); the unit tests drive the same life with a fake one (Nomad's
//! allocrunner and its mock driver are the model).

use super::error::{CleanupError, StartError};
use super::health::Probe;
use crate::runtime::{Container, ExitStatus, RuntimeError};
use drover_proto::spec::{Health, JobSpec};
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One allocation, as the scheduler placed it on this node.
#[derive(Clone, Debug)]
pub struct Alloc {
    pub id: String,
    /// Its replica's name (the container's hostname).
    pub name: String,
    pub spec: JobSpec,
}

/// A container a previous agent process started, picked up by the
/// allocation's runner instead of starting it again.
pub struct Adoption<D: Driver + ?Sized> {
    pub prepared: D::Prepared,
    pub task: D::Task,
    /// Its address on the node's container network, if it has one.
    pub ip: Option<IpAddr>,
}

/// What an allocation's life does to the node.
pub trait Driver: Send + Sync + 'static {
    /// What `prepare` leaves for one allocation (its bundle).
    type Prepared: Send + Sync + 'static;
    /// A started container.
    type Task: Task;

    /// Refuses to start a container that needs the node's container network
    /// while that network cannot be set up.
    fn network_ready(&self, alloc: &Alloc) -> impl Future<Output = Result<(), StartError>> + Send;

    /// Pulls the image and writes the container's bundle.
    fn prepare(
        &self,
        alloc: &Alloc,
    ) -> impl Future<Output = Result<Self::Prepared, StartError>> + Send;

    /// Starts the container of a prepared bundle.
    fn start(
        &self,
        alloc: &Alloc,
        prepared: &Self::Prepared,
    ) -> impl Future<Output = Result<Self::Task, StartError>> + Send;

    /// Gives a started container its address on the node's network (`None`:
    /// it has none of its own, as with host networking). A driver may have
    /// attached it during `start`, before its command ran (the node's does):
    /// then this reports the address it got.
    fn attach_network(
        &self,
        alloc: &Alloc,
        pid: i32,
    ) -> impl Future<Output = Result<Option<IpAddr>, StartError>> + Send;

    /// Releases what an exited container still held (its cgroup); true when
    /// the kernel killed it for exceeding its memory limit.
    fn reap(&self, id: &str, status: ExitStatus) -> bool;

    /// Runs the health check once against the container.
    fn probe(&self, check: &Health, alloc: &Alloc, pid: i32) -> impl Future<Output = Probe> + Send;

    /// Connects to where the routing mesh sends the container's traffic.
    fn reach(&self, addr: SocketAddr, timeout: Duration) -> impl Future<Output = Probe> + Send;

    /// How many connections to `port` the container (its init `pid`) has
    /// open or opening now.
    fn open_connections(&self, pid: i32, port: u16) -> usize;

    /// Removes what a stopped container left (as `cleanup`), keeping its
    /// image: it starts again at once from a fresh root.
    fn discard(
        &self,
        id: &str,
        prepared: Option<Self::Prepared>,
    ) -> impl Future<Output = Result<(), CleanupError>> + Send;

    /// The disk its writable layer takes (counting may stop once past
    /// `stop_after`); `None` when it cannot be told.
    fn disk_used(&self, id: &str, stop_after: u64) -> impl Future<Output = Option<u64>> + Send;

    /// Removes everything the allocation left (bundle, cgroup, address),
    /// once its container is gone.
    fn cleanup(
        &self,
        id: &str,
        prepared: Option<Self::Prepared>,
    ) -> impl Future<Output = Result<(), CleanupError>> + Send;

    /// The container a previous agent process left running for `id`.
    fn adopt(&self, id: &str) -> Option<Adoption<Self>>;

    /// Stops the containers left by a previous agent process that no
    /// allocation in `wanted` claims.
    fn disown_except(&self, wanted: &HashSet<String>);

    /// Whether anything of allocation `id` is on this node (its bundle):
    /// if so, its runner (or the retention of ended allocations) reports it.
    fn has_traces(&self, id: &str) -> bool;

    /// How long ago a leader last acknowledged this node.
    fn since_acknowledged(&self) -> Duration;

    /// The node timeout the scheduler fences nodes by.
    fn node_timeout(&self) -> Duration;
}

/// A started container.
pub trait Task: Send + Sync + 'static {
    fn pid(&self) -> i32;
    /// Its exit status, if it has exited (without waiting).
    fn try_wait(&self) -> Result<Option<ExitStatus>, RuntimeError>;
    /// Waits for it to exit.
    fn wait(&self) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send;
    /// SIGTERM, then SIGKILL after `grace`; waits for it to exit.
    fn stop(
        &self,
        grace: Duration,
    ) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send;
}

impl Task for Container {
    fn pid(&self) -> i32 {
        Container::pid(self)
    }

    fn try_wait(&self) -> Result<Option<ExitStatus>, RuntimeError> {
        Container::try_wait(self)
    }

    fn wait(&self) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send {
        Container::wait(self)
    }

    fn stop(
        &self,
        grace: Duration,
    ) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send {
        Container::stop(self, grace)
    }
}
