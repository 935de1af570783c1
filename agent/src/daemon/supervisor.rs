//! The supervisor: converges this node's allocations to the desired set.
//!
//! Level-triggered (DESIGN decision 3): on every new desired set it starts a
//! runner for each allocation it does not run yet and stops every runner
//! whose allocation is no longer in the set. An allocation that ended for
//! good under its restart policy keeps its (finished) runner while it stays
//! desired, so it is not started again.
//!
//! At start the supervisor re-adopts the containers a previous agent process
//! left running under their monitors (see `runtime::monitor`): a runner for
//! the same allocation picks its container up instead of starting a new
//! one; an adopted container no desired set asks for is stopped.

use super::allocation::Runner;
use super::driver::Driver;
use super::mesh::Mesh;
use super::node_driver::NodeDriver;
use super::reporter::Reporter;
use super::Shared;
use drover_proto::fencing;
use drover_proto::pb;
use drover_proto::spec::OnDisconnect;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub async fn run(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Option<pb::DesiredAllocations>>,
    mut stop: broadcast::Receiver<()>,
) {
    let driver = Arc::new(NodeDriver::new(shared.clone()));
    let mut allocations = Supervisor::new(driver, shared.reporter.clone());
    let mut mesh = Mesh::new(shared.mesh_ip, shared.stats.clone());
    // Fenced: no leader has acknowledged this node for the node timeout, so
    // the scheduler is about to replace its replicas elsewhere. Desired sets
    // that arrive meanwhile may be stale and are not acted on.
    let mut fenced = false;
    loop {
        let set = desired.borrow_and_update().clone();
        if let (Some(set), false) = (set, fenced) {
            // Before any runner starts: what they mount comes from here.
            *shared.secrets.lock().unwrap_or_else(|e| e.into_inner()) = set
                .secrets
                .iter()
                .map(|s| ((s.kind.clone(), s.name.clone()), s.clone()))
                .collect();
            allocations.converge(set.allocations);
            allocations.never_started(&set.stopping);
            mesh.sync(&set.services).await;
            shared.dns.update(&set.names);
            let routes: Vec<(String, String)> =
                set.routes.into_iter().map(|r| (r.subnet, r.via)).collect();
            let net = shared.clone();
            // Also when empty: routes to nodes that left are removed.
            tokio::task::spawn_blocking(move || {
                if let Some(n) = net.network.get() {
                    n.sync_routes(&routes);
                }
            });
        }
        tokio::select! {
            _ = stop.recv() => break,
            r = desired.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(fencing::FENCE_CHECK) => {
                let since = shared.since_acknowledged();
                let must = fencing::must_fence(since, shared.node_timeout());
                if fenced && !must {
                    tracing::info!("a leader acknowledges this node again: converging");
                    fenced = false;
                } else if !fenced && must {
                    fenced = true;
                    allocations.fence(since).await;
                }
            }
        }
    }
    mesh.close();
    allocations.shutdown().await;
}

/// The runners of this node's allocations, converged to each desired set.
pub struct Supervisor<D: Driver> {
    driver: Arc<D>,
    reporter: Reporter,
    runners: HashMap<String, Runner>,
    /// Allocations whose runners ended and were dropped while the
    /// scheduler may still list them as stopping, with how their runners
    /// said they ended (which a "not running" must not overwrite): sent
    /// again for as long as the scheduler lists them, since a peer may
    /// have acknowledged the report and lost it (see `never_started`).
    ended: HashMap<String, Option<pb::AllocationReport>>,
}

impl<D: Driver> Supervisor<D> {
    pub fn new(driver: Arc<D>, reporter: Reporter) -> Supervisor<D> {
        Supervisor {
            driver,
            reporter,
            runners: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// Starts a runner for every allocation in `wanted` that has none, and
    /// stops every runner whose allocation is not in it.
    pub fn converge(&mut self, wanted: Vec<pb::DesiredAllocation>) {
        let wanted_ids: HashSet<String> = wanted.iter().map(|a| a.id.clone()).collect();
        // Stop first: the set may be replacing these elsewhere.
        for (id, r) in self.runners.iter() {
            if !wanted_ids.contains(id) {
                r.stop("no longer desired on this node");
            }
        }
        let (reporter, ended) = (&self.reporter, &mut self.ended);
        self.runners.retain(|id, r| {
            let keep = wanted_ids.contains(id) || !r.is_finished();
            if !keep {
                let last = reporter.latest(id);
                reporter.forget(id);
                ended.insert(id.clone(), last);
            }
            keep
        });
        self.driver.disown_except(&wanted_ids);
        for a in wanted {
            if self.runners.contains_key(&a.id) {
                continue;
            }
            let id = a.id.clone();
            match Runner::spawn(self.driver.clone(), self.reporter.clone(), a) {
                Ok(r) => {
                    self.runners.insert(id, r);
                }
                Err(e) => {
                    tracing::error!(alloc = %id, error = %e, "cannot run allocation");
                    self.reporter.update(pb::AllocationReport {
                        id: id.clone(),
                        state: pb::AllocationPhase::Failed.word().into(),
                        phase: pb::AllocationPhase::Failed as i32,
                        reason: e.to_string(),
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// Reports as stopped the allocations the scheduler is waiting on that
    /// this node never ran (it stopped them before their desired set
    /// arrived here), or whose runner already ended and was forgotten.
    pub fn never_started(&mut self, stopping: &[String]) {
        // Once the scheduler no longer lists them, they are done with.
        let reporter = &self.reporter;
        self.ended.retain(|id, _| {
            let listed = stopping.contains(id);
            if !listed {
                reporter.discard(id);
            }
            listed
        });
        for id in stopping {
            if let Some(last) = self.ended.get(id) {
                // Its runner reported how it ended, and the scheduler still
                // waits: that report was acknowledged by a peer and never
                // applied (a deposed leader, or one whose view was behind).
                // Again, until it takes; the full re-send repeats it.
                if let Some(r) = last {
                    self.reporter.update(r.clone());
                }
                continue;
            }
            if self.runners.contains_key(id) || self.driver.has_traces(id) {
                continue; // its runner reports how it ends
            }
            self.reporter.update(pb::AllocationReport {
                id: id.clone(),
                state: pb::AllocationPhase::Stopped.word().into(),
                phase: pb::AllocationPhase::Stopped as i32,
                reason: "not running on this node".into(),
                ..Default::default()
            });
        }
    }

    /// Stops every replica whose job did not opt out, within the fencing
    /// bound, and forgets their runners so that they start again if the
    /// same allocations are still desired once a leader is back.
    pub async fn fence(&mut self, since: Duration) {
        let why = format!(
            "no leader acknowledged this node for {:.1}s: stopped so that it cannot run on two nodes (fencing)",
            since.as_secs_f64()
        );
        tracing::warn!(silent = ?since, "{why}");
        let fenced: Vec<String> = self
            .runners
            .iter()
            .filter(|(_, r)| r.on_disconnect == OnDisconnect::Stop)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &fenced {
            self.runners[id].stop_within(&why, fencing::FENCE_STOP_GRACE);
        }
        for id in fenced {
            if let Some(r) = self.runners.remove(&id) {
                r.join().await;
            }
        }
    }

    /// Shutting down: stops every container, all at once, and waits.
    pub async fn shutdown(mut self) {
        for r in self.runners.values() {
            r.stop("agent shutting down");
        }
        for (_, r) in self.runners.drain() {
            r.join().await;
        }
    }
}
