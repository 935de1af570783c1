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
use drover_proto::pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub async fn run(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Option<pb::DesiredAllocations>>,
    stop_after_disconnect: Option<Duration>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut runners: HashMap<String, Runner> = HashMap::new();
    let mut mesh = Mesh::new(shared.mesh_ip);
    let mut cut_off = false;
    loop {
        let set = desired.borrow_and_update().clone();
        if let (Some(set), false) = (set, cut_off) {
            converge(&shared, &mut runners, set.allocations);
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
            r = desired.changed() => {
                if r.is_err() { break }
                // A fresh desired set means a scheduler is back: converge to it.
                cut_off = false;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if stop_after_disconnect.is_some() => {
                let limit = stop_after_disconnect.expect("checked");
                let silent = shared.last_contact.lock().expect("contact lock").elapsed();
                if cut_off && silent < limit {
                    // Back in touch (its desired set may have arrived while we were
                    // stopping): converge again on the next pass.
                    cut_off = false;
                } else if !cut_off && silent > limit {
                    // The scheduler has likely replaced these elsewhere by now:
                    // stop them rather than risk running a replica twice.
                    tracing::warn!(silent = ?silent, "no scheduler reached: stopping every allocation");
                    cut_off = true;
                    let why = format!("no scheduler reached for {}s (--stop-after-disconnect)", silent.as_secs());
                    for r in runners.values() {
                        r.stop(&why);
                    }
                    for (_, r) in runners.drain() {
                        r.join().await;
                    }
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
                    state: "failed".into(),
                    reason: e,
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
            state: "stopped".into(),
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
