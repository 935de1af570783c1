//! Keeping an eye on the node's container network, so the scheduler knows.
//!
//! The scheduler places private-network replicas only on nodes whose
//! container network works, and it learns which do from the heartbeats:
//! each carries [`Shared::network_error`], why the network is unavailable
//! ("" when it works). Nothing else would notice a change: while the
//! network cannot be set up, no replica that needs it is placed here, so no
//! replica start retries the setup. This task does, every
//! [`RECHECK`]; once the network is up it checks instead that the subnet is
//! still this node's alone (another interface may take the gateway address
//! later), and records what it finds for the next heartbeat. It also starts
//! the node's DNS server if it could not listen before.

use super::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often the network is set up again (while it is unavailable) or checked.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Retries the setup or checks the network every `every` until `stop`.
pub async fn run(shared: Arc<Shared>, every: Duration, mut stop: broadcast::Receiver<()>) {
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || recheck(&s)).await;
    }
}

/// One round: set the network up again if it is down, else check it. Blocking.
fn recheck(shared: &Shared) {
    if let Some(net) = shared.network.get() {
        shared.serve_dns(net);
        let now = net.check().err().map(|e| e.to_string());
        if shared.set_network_error(now.as_deref().unwrap_or_default()) {
            match &now {
                Some(e) => {
                    tracing::error!(error = %e, "the node's container network is no longer usable")
                }
                None => tracing::info!("the node's container network is usable again"),
            }
        }
        return;
    }
    let subnet = shared
        .network_problem
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(s, _)| s.clone());
    if let Some(subnet) = subnet {
        // Logged and recorded inside.
        let _ = shared.setup_network(&subnet);
    }
}
