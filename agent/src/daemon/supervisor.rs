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

use super::allocation::{self, Runner};
use super::mesh::Mesh;
use super::Shared;
use crate::bundle::Bundle;
use crate::runtime::Container;
use drover_proto::fencing;
use drover_proto::pb;
use drover_proto::spec::OnDisconnect;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

pub async fn run(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Option<pb::DesiredAllocations>>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut runners: HashMap<String, Runner> = HashMap::new();
    let mut mesh = Mesh::new(shared.mesh_ip);
    // Fenced: no leader has acknowledged this node for the node timeout, so
    // the scheduler is about to replace its replicas elsewhere. Desired sets
    // that arrive meanwhile may be stale and are not acted on.
    let mut fenced = false;
    loop {
        let set = desired.borrow_and_update().clone();
        if let (Some(set), false) = (set, fenced) {
            converge(&shared, &mut runners, set.allocations);
            never_started(&shared, &runners, &set.stopping);
            mesh.sync(&set.services).await;
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
                    fence(&mut runners, since).await;
                }
            }
        }
    }
    mesh.close();
    // Shutting down: stop every container we run, all at once, and wait.
    for r in runners.values() {
        r.stop("agent shutting down");
    }
    for (_, r) in runners.drain() {
        r.join().await;
    }
}

/// Stops every replica whose job did not opt out, within the fencing bound,
/// and forgets their runners so that they start again if the same
/// allocations are still desired once a leader is back.
async fn fence(runners: &mut HashMap<String, Runner>, since: std::time::Duration) {
    let why = format!(
        "no leader acknowledged this node for {:.1}s: stopped so that it cannot run on two nodes (fencing)",
        since.as_secs_f64()
    );
    tracing::warn!(silent = ?since, "{why}");
    let fenced: Vec<String> = runners
        .iter()
        .filter(|(_, r)| r.on_disconnect == OnDisconnect::Stop)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &fenced {
        runners[id].stop_within(&why, fencing::FENCE_STOP_GRACE);
    }
    for id in fenced {
        if let Some(r) = runners.remove(&id) {
            r.join().await;
        }
    }
}

/// Reports as stopped the allocations the scheduler is waiting on that this
/// node never ran (it stopped them before their desired set arrived here),
/// or whose runner already ended and was forgotten.
fn never_started(shared: &Arc<Shared>, runners: &HashMap<String, Runner>, stopping: &[String]) {
    for id in stopping {
        if runners.contains_key(id) || shared.bundle_dir(id).exists() {
            continue; // its runner reports how it ends
        }
        shared.reporter.update(pb::AllocationReport {
            id: id.clone(),
            state: pb::AllocationPhase::Stopped.word().into(),
            phase: pb::AllocationPhase::Stopped as i32,
            reason: "not running on this node".into(),
            ..Default::default()
        });
    }
}

fn converge(
    shared: &Arc<Shared>,
    runners: &mut HashMap<String, Runner>,
    wanted: Vec<pb::DesiredAllocation>,
) {
    let wanted_ids: std::collections::HashSet<String> =
        wanted.iter().map(|a| a.id.clone()).collect();
    // Stop first: the set may be replacing these elsewhere.
    for (id, r) in runners.iter() {
        if !wanted_ids.contains(id) {
            r.stop("no longer desired on this node");
        }
    }
    runners.retain(|id, r| {
        let keep = wanted_ids.contains(id) || !r.is_finished();
        if !keep {
            shared.reporter.forget(id);
        }
        keep
    });
    disown_unwanted(shared, &wanted_ids);
    for a in wanted {
        if runners.contains_key(&a.id) {
            continue;
        }
        let id = a.id.clone();
        match allocation::Runner::spawn(shared.clone(), a) {
            Ok(r) => {
                runners.insert(id, r);
            }
            Err(e) => {
                tracing::error!(alloc = %id, error = %e, "cannot run allocation");
                shared.reporter.update(pb::AllocationReport {
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

/// A container a previous agent process started, found running (or with its
/// exit status recorded) at start.
pub struct Adopted {
    pub bundle: Bundle,
    pub container: Container,
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

/// Stops the adopted containers whose allocations are not in `wanted`.
fn disown_unwanted(shared: &Arc<Shared>, wanted: &std::collections::HashSet<String>) {
    let unwanted: Vec<Adopted> = {
        let mut adopted = shared.adopted.lock().unwrap_or_else(|e| e.into_inner());
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
            let _ = a.container.stop(std::time::Duration::from_secs(10)).await;
            if let Err(err) = a.bundle.cleanup() {
                tracing::warn!(alloc = %id, error = %err, "bundle cleanup");
            }
        });
    }
}
