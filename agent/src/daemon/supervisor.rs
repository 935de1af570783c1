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
use super::Shared;
use crate::bundle::Bundle;
use crate::runtime::Container;
use drover_proto::pb;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

pub async fn run(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Option<pb::DesiredAllocations>>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut runners: HashMap<String, Runner> = HashMap::new();
    loop {
        let set = desired.borrow_and_update().clone();
        if let Some(set) = set {
            converge(&shared, &mut runners, set.allocations);
        }
        tokio::select! {
            _ = stop.recv() => break,
            r = desired.changed() => if r.is_err() { break },
        }
    }
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
            Err(e) => tracing::error!(alloc = %id, error = %e, "cannot run allocation"),
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
