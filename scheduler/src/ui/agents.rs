//! Calls from this peer to agents for the UI: an allocation's logs, and
//! what its replicas use now. The peer signs the ticket an agent asks for
//! itself, naming itself as the holder (agents let a peer read logs and
//! usage, nothing else).

use super::Ui;
use drover_proto::pb;
use drover_proto::pki::ticket::{Action, Ticket};
use std::time::Duration;

/// A ticket for one call, put on its request.
#[derive(Debug)]
pub(super) struct Signed(Option<String>);

impl Signed {
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = self.0.as_ref().and_then(|t| t.parse().ok()) {
            r.metadata_mut()
                .insert(drover_proto::pki::ticket::METADATA, t);
        }
        r
    }
}

type Agent = pb::agent_api_client::AgentApiClient<tonic::transport::Channel>;

/// A client of the agent at `address` and a ticket for `action` on
/// allocation `alloc` there (none without TLS: agents ask for none).
pub(super) async fn dial(
    ui: &Ui,
    action: Action,
    alloc: &str,
    node: &str,
    address: &str,
) -> Result<(Agent, Signed), String> {
    let holder = drover_proto::pki::Identity::Scheduler(ui.peer.id).uri();
    let ticket = match &ui.tickets {
        Some(live) => Some(
            Ticket::new(action, alloc, node, &holder, std::time::SystemTime::now())
                .sign(&live.material().credential)
                .map_err(|e| format!("cannot sign a ticket: {e}"))?,
        ),
        None => None,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("agent address {address:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        // An agent that vanished ends a stream in seconds.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let channel = ui
        .agents
        .connect(&endpoint)
        .await
        .map_err(|e| format!("cannot reach the agent at {address}: {e}"))?;
    Ok((Agent::new(channel), Signed(ticket)))
}

/// What one running allocation uses now, asked of its agent (`None` if
/// it cannot say within a few seconds).
pub(super) async fn usage(ui: &Ui, alloc: &str, node: &str, address: &str) -> Option<pb::Usage> {
    let ask = async {
        let (mut agent, ticket) = dial(ui, Action::Usage, alloc, node, address).await.ok()?;
        let req = ticket.request(pb::UsageRequest {
            alloc_id: alloc.to_string(),
        });
        agent.usage(req).await.ok().map(tonic::Response::into_inner)
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}
