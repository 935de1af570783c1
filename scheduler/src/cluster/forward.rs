//! How a follower gets the leader to act: forwarded commands, read indexes
//! and heartbeats, over one cached gRPC channel per replica address.
//!
//! Every forwarded call goes through [`with_leader`]: find the leader in this
//! replica's Raft metrics, run the call there (or here, if this replica
//! leads), and on a failure that means "that was not, or is no longer, the
//! leader" wait briefly for the metrics to change and try again, until
//! [`PATIENCE`] has passed. A forwarded call still waiting when another
//! leader becomes known is abandoned and made again there: a frozen leader
//! would otherwise hold it until the connection's keepalive gives up.
//! Retrying is safe: client commands carry a request id the state machine
//! de-duplicates, and the others are idempotent.

use crate::replica::Replica;
use crate::state::{Command, CommandResult};
use drover_proto::pb;
use drover_proto::pb::cluster_client::ClusterClient;
use drover_proto::pb::node_service_client::NodeServiceClient;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long a replica keeps trying to reach a leader before giving up.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a forwarded call may take: longer than the leader's own commit
/// timeout, so a forwarded write is never reported failed while the leader
/// still waits for it to commit.
const CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// Marks a request already forwarded once, so it is never forwarded again.
pub const FORWARDED: &str = "drover-forwarded";

/// Where this replica believes the leader is.
#[derive(Clone, Debug, PartialEq)]
pub enum Leader {
    Here,
    At(String),
    Unknown,
}

/// Channels to other replicas, by address.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
    tls: drover_proto::pki::tls::ClientTls,
}

impl Forwarder {
    /// Dialling other replicas with `tls` (their certificates are checked
    /// against the cluster CA; ours is presented).
    pub fn new(tls: drover_proto::pki::tls::ClientTls) -> Forwarder {
        Forwarder {
            channels: Default::default(),
            tls,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("replica address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(crate::KEEPALIVE)
            .keep_alive_timeout(crate::KEEPALIVE)
            .keep_alive_while_idle(true);
        let ch = self.tls.connect_lazy(&ch);
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// A client of the cluster API on the replica at `addr`.
    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, Status> {
        Ok(ClusterClient::new(self.channel(addr)?).max_decoding_message_size(64 << 20))
    }

    /// Has the replica at `addr` (the leader) propose `cmd`.
    pub async fn command(&self, addr: &str, cmd: &Command) -> Result<CommandResult, Status> {
        let command_json = serde_json::to_vec(cmd)
            .map_err(|e| Status::internal(format!("encoding a command: {e}")))?;
        let r = self
            .cluster(addr)?
            .forward(pb::ForwardRequest { command_json })
            .await?
            .into_inner();
        serde_json::from_slice(&r.result_json)
            .map_err(|e| Status::internal(format!("decoding a command result: {e}")))
    }

    /// The commit index of the leader at `addr`, once it confirmed it leads.
    pub async fn read_index(&self, addr: &str) -> Result<u64, Status> {
        let r = self
            .cluster(addr)?
            .read_index(pb::ReadIndexRequest {})
            .await?;
        Ok(r.into_inner().index)
    }

    /// Passes an agent's heartbeat on to the leader at `addr`.
    pub async fn heartbeat(
        &self,
        addr: &str,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let mut req = tonic::Request::new(req);
        req.metadata_mut()
            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        // The agent gives up on a heartbeat after half a second; a leader
        // that has not answered in a second is not one to wait for.
        req.set_timeout(Duration::from_secs(1));
        let mut c = NodeServiceClient::new(self.channel(addr)?);
        Ok(c.heartbeat(req).await?.into_inner())
    }
}

/// The leader as `replica`'s Raft metrics show it.
pub fn leader(replica: &Replica) -> Leader {
    let m = replica.raft.metrics();
    let m = m.borrow();
    match m.current_leader {
        Some(id) if id == replica.id && m.state.is_leader() => Leader::Here,
        Some(id) if id == replica.id => Leader::Unknown,
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(n) => Leader::At(n.addr.clone()),
            None => Leader::Unknown,
        },
        None => Leader::Unknown,
    }
}

/// Whether a failed call may succeed against a (new) leader.
fn retryable(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Cancelled)
}

/// Runs `call` with the leader's address (`None`: this replica leads),
/// waiting out elections and following leader changes for up to [`PATIENCE`].
pub async fn with_leader<T, F, Fut>(replica: &Replica, mut call: F) -> Result<T, Status>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut metrics = replica.raft.metrics();
    let mut last_err = None;
    loop {
        let target = match leader(replica) {
            Leader::Here => Some(None),
            Leader::At(addr) => Some(Some(addr)),
            Leader::Unknown => None,
        };
        if let Some(target) = target {
            let outcome = match target.clone() {
                // A call forwarded to a leader that loses its place while
                // the call waits (it froze, or was cut off) may never be
                // answered: once a new leader is known, ask that one.
                Some(addr) => tokio::select! {
                    r = call(target) => Some(r),
                    _ = leader_moves_from(replica, &addr) => None,
                },
                None => Some(call(target).await),
            };
            match outcome {
                Some(Err(s)) if retryable(&s) => last_err = Some(s),
                Some(r) => return r,
                None => {
                    last_err = Some(Status::unavailable("the leader changed during the call"));
                    continue;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = last_err.map_or("no leader elected".to_string(), |s| s.message().to_string());
            return Err(Status::unavailable(format!(
                "no leader reachable from this replica for {}s (is a majority of replicas up and connected?): {why}",
                PATIENCE.as_secs()
            )));
        }
        // Wake on a leadership change, or poll: a leader may be known but dead.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(25)), metrics.changed()).await;
    }
}

/// Resolves once `replica` knows of a leader other than the one at `addr`
/// (an election in progress does not count: the old leader may win it).
async fn leader_moves_from(replica: &Replica, addr: &str) {
    let mut metrics = replica.raft.metrics();
    loop {
        match leader(replica) {
            Leader::At(a) if a == addr => {}
            Leader::Unknown => {}
            _ => return,
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Serves an agent's heartbeat on a follower by passing it to the leader,
/// which keeps node liveness. Returns `None` if this replica became the
/// leader meanwhile: the caller then answers it itself.
pub async fn heartbeat_via_leader(
    replica: &Replica,
    req: pb::HeartbeatRequest,
) -> Result<Option<pb::HeartbeatResponse>, Status> {
    with_leader(replica, |leader| {
        let req = req.clone();
        async move {
            match leader {
                None => Ok(None),
                Some(addr) => replica.forwarder.heartbeat(&addr, req).await.map(Some),
            }
        }
    })
    .await
}
