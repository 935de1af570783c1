//! How a follower gets the leader to act: forwarded commands, read indexes
//! and heartbeats, over one cached gRPC channel per peer address.
//!
//! Every forwarded call goes through [`with_leader`]: find the leader in this
//! peer's Raft metrics, run the call there (or here, if this peer
//! leads), and on a failure that means "that was not, or is no longer, the
//! leader" wait briefly for the metrics to change and try again, until
//! [`PATIENCE`] has passed. A forwarded call still waiting when another
//! leader becomes known is abandoned and made again there: a frozen leader
//! would otherwise hold it until the connection's keepalive gives up.
//! Retrying is safe: client commands carry a request id the state machine
//! de-duplicates, and the others are idempotent.
//!
//! Commands go to a leader in batches (`ForwardBatch`): while one call to
//! it is under way, the commands that arrive wait and go together in the
//! next, so a follower serving many clients makes one call where it made
//! hundreds (a TLS record, an HTTP/2 stream and a task each), and a lone
//! command waits for nothing. Each command in a batch answers as if it had
//! been forwarded alone. A leader too old to know `ForwardBatch` gets them
//! one by one.

use super::PeerError;
use crate::cluster::peer::Peer;
use crate::state::{Command, CommandResult};
use drover_proto::pb;
use drover_proto::pb::cluster_client::ClusterClient;
use drover_proto::pb::node_service_client::NodeServiceClient;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// How long a peer keeps trying to reach a leader before giving up.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a forwarded call may take: longer than the leader's own commit
/// timeout, so a forwarded write is never reported failed while the leader
/// still waits for it to commit.
const CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// Marks a request already forwarded once, so it is never forwarded again.
pub const FORWARDED: &str = "drover-forwarded";

/// Where this peer believes the leader is.
#[derive(Clone, Debug, PartialEq)]
pub enum Leader {
    Here,
    At(String),
    Unknown,
}

/// At most so many commands in one `ForwardBatch` call...
const MAX_BATCH: usize = 512;
/// ...and at most so many bytes of them (at least one command).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// What one forwarded command of a batch comes back as.
type Outcome = Result<pb::ForwardOutcome, tonic::Status>;

/// A call that has not come back in this long may never (a frozen
/// leader): commands queued behind it get a call of their own.
const STUCK: Duration = Duration::from_secs(1);

/// The commands waiting to go to one leader, and the tasks calling it
/// (each sends what waits, a batch at a time, until nothing does).
struct Queue {
    waiting: Vec<(Vec<u8>, oneshot::Sender<Outcome>)>,
    tasks: usize,
    /// When a task last took a batch.
    last_taken: Instant,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue {
            waiting: Vec::new(),
            tasks: 0,
            last_taken: Instant::now(),
        }
    }
}

type Queues = Arc<Mutex<HashMap<String, Queue>>>;

/// Channels to other peers, by address.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
    tls: drover_proto::pki::tls::ClientTls,
    queues: Queues,
    /// Leaders that do not know `ForwardBatch` (an older version).
    unbatched: Mutex<HashSet<String>>,
}

impl Forwarder {
    /// Dialling other peers with `tls` (their certificates are checked
    /// against the cluster CA; ours is presented).
    pub fn new(tls: drover_proto::pki::tls::ClientTls) -> Forwarder {
        Forwarder {
            channels: Default::default(),
            tls,
            queues: Default::default(),
            unbatched: Default::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| PeerError::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
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

    /// A client of the cluster API on the peer at `addr`.
    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, PeerError> {
        Ok(ClusterClient::new(self.channel(addr)?).max_decoding_message_size(64 << 20))
    }

    /// Has the peer at `addr` (the leader) propose `cmd`.
    pub async fn command(&self, addr: &str, cmd: &Command) -> Result<CommandResult, PeerError> {
        let command_json = serde_json::to_vec(cmd).map_err(PeerError::Encode)?;
        let client = self.cluster(addr)?;
        if !lock(&self.unbatched).contains(addr) {
            match self.batched(client.clone(), addr, command_json).await {
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    lock(&self.unbatched).insert(addr.to_string());
                }
                Err(s) => return Err(PeerError::Remote(s)),
                Ok(o) if o.code != 0 => return Err(PeerError::Remote(outcome_status(o))),
                Ok(o) => return serde_json::from_slice(&o.result_json).map_err(PeerError::Decode),
            }
        }
        // A leader without `ForwardBatch`: alone (encoded again, as this is
        // rare and the batch took the bytes).
        let command_json = serde_json::to_vec(cmd).map_err(PeerError::Encode)?;
        let r = client
            .clone()
            .forward(pb::ForwardRequest { command_json })
            .await?
            .into_inner();
        serde_json::from_slice(&r.result_json).map_err(PeerError::Decode)
    }

    /// Queues `command_json` for the leader at `addr` and waits for what
    /// the batch it went in answered for it.
    async fn batched(
        &self,
        client: ClusterClient<Channel>,
        addr: &str,
        command_json: Vec<u8>,
    ) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queues = lock(&self.queues);
            let q = queues.entry(addr.to_string()).or_default();
            q.waiting.push((command_json, tx));
            let start = q.tasks == 0 || q.last_taken.elapsed() > STUCK;
            if start {
                q.tasks += 1;
                q.last_taken = Instant::now();
            }
            start
        };
        if start {
            tokio::spawn(send_batches(client, self.queues.clone(), addr.to_string()));
        }
        rx.await
            .unwrap_or_else(|_| Err(tonic::Status::unavailable("the forwarding task ended")))
    }

    /// The commit index of the leader at `addr`, once it confirmed it leads.
    pub async fn read_index(&self, addr: &str) -> Result<u64, PeerError> {
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
    ) -> Result<pb::HeartbeatResponse, PeerError> {
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

/// Sends the commands queued for `addr`, a batch per call, until none
/// wait; then leaves (counted under the queue's lock, so a command queued
/// meanwhile starts a new task).
async fn send_batches(client: ClusterClient<Channel>, queues: Queues, addr: String) {
    loop {
        let batch = {
            let mut queues = lock(&queues);
            let Some(q) = queues.get_mut(&addr) else {
                return;
            };
            if q.waiting.is_empty() {
                q.tasks -= 1;
                return;
            }
            q.last_taken = Instant::now();
            let (mut n, mut bytes) = (0, 0);
            while n < q.waiting.len() && n < MAX_BATCH {
                bytes += q.waiting[n].0.len();
                if n > 0 && bytes > MAX_BATCH_BYTES {
                    break;
                }
                n += 1;
            }
            q.waiting.drain(..n).collect::<Vec<_>>()
        };
        let (commands_json, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let answer = client
            .clone()
            .forward_batch(pb::ForwardBatchRequest { commands_json })
            .await
            .map(|r| r.into_inner().outcomes);
        match answer {
            Ok(outcomes) if outcomes.len() == waiters.len() => {
                for (tx, o) in waiters.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(o));
                }
            }
            Ok(outcomes) => {
                let s = tonic::Status::internal(format!(
                    "the leader answered {} of {} forwarded commands",
                    outcomes.len(),
                    waiters.len()
                ));
                for tx in waiters {
                    let _ = tx.send(Err(s.clone()));
                }
            }
            Err(s) => {
                for tx in waiters {
                    let _ = tx.send(Err(s.clone()));
                }
            }
        }
    }
}

/// A command of a batch that failed, as the leader answers it: what a
/// `Forward` of it alone would have failed with.
pub fn failed_outcome(s: &tonic::Status) -> pb::ForwardOutcome {
    pb::ForwardOutcome {
        code: s.code() as i32,
        message: s.message().to_string(),
        leader: s
            .metadata()
            .get(LEADER_HINT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    }
}

/// The status a failed outcome stands for (see [`failed_outcome`]).
fn outcome_status(o: pb::ForwardOutcome) -> tonic::Status {
    let mut s = tonic::Status::new(tonic::Code::from(o.code), o.message);
    if let Some(v) = (!o.leader.is_empty())
        .then(|| o.leader.parse().ok())
        .flatten()
    {
        s.metadata_mut().insert(LEADER_HINT, v);
    }
    s
}

/// The metadata naming the leader on a "not the leader" status.
pub const LEADER_HINT: &str = "drover-leader";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The leader as `peer`'s Raft metrics show it.
pub fn leader(peer: &Peer) -> Leader {
    let m = peer.raft.metrics();
    let m = m.borrow();
    match m.current_leader {
        Some(id) if id == peer.id && m.state.is_leader() => Leader::Here,
        Some(id) if id == peer.id => Leader::Unknown,
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(n) => Leader::At(n.addr.clone()),
            None => Leader::Unknown,
        },
        None => Leader::Unknown,
    }
}

/// An error of a call made through [`with_leader`]: it says whether the
/// call may succeed against a (new) leader, and holds [`PeerError`]s.
pub trait CallError: From<PeerError> {
    fn retryable(&self) -> bool;
    /// What went wrong, in words (for the error that gives up).
    fn why(&self) -> String;
}

impl CallError for PeerError {
    fn retryable(&self) -> bool {
        PeerError::retryable(self)
    }

    fn why(&self) -> String {
        self.to_string()
    }
}

/// Runs `call` with the leader's address (`None`: this peer leads),
/// waiting out elections and following leader changes for up to [`PATIENCE`].
pub async fn with_leader<T, E, F, Fut>(peer: &Peer, mut call: F) -> Result<T, E>
where
    E: CallError,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut metrics = peer.raft.metrics();
    let mut last_err = None;
    loop {
        let target = match leader(peer) {
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
                    _ = leader_moves_from(peer, &addr) => None,
                },
                None => Some(call(target).await),
            };
            match outcome {
                Some(Err(e)) if e.retryable() => last_err = Some(e),
                Some(r) => return r,
                None => {
                    last_err = Some(E::from(PeerError::LeaderChanged));
                    continue;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = last_err.map_or("no leader elected".to_string(), |e| e.why());
            return Err(E::from(PeerError::NoLeader {
                secs: PATIENCE.as_secs(),
                why,
            }));
        }
        // Wake on a leadership change, or poll: a leader may be known but dead.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(25)), metrics.changed()).await;
    }
}

/// Resolves once `peer` knows of a leader other than the one at `addr`
/// (an election in progress does not count: the old leader may win it).
async fn leader_moves_from(peer: &Peer, addr: &str) {
    let mut metrics = peer.raft.metrics();
    loop {
        match leader(peer) {
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
/// which keeps node liveness. Returns `None` if this peer became the
/// leader meanwhile: the caller then answers it itself.
pub async fn heartbeat_via_leader(
    peer: &Peer,
    req: pb::HeartbeatRequest,
) -> Result<Option<pb::HeartbeatResponse>, PeerError> {
    with_leader(peer, |leader| {
        let req = req.clone();
        async move {
            match leader {
                None => Ok(None),
                Some(addr) => peer.forwarder.heartbeat(&addr, req).await.map(Some),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_of_a_batch_answers_as_if_forwarded_alone() {
        let not_leader: tonic::Status = PeerError::NotLeader {
            leader: "10.0.0.1:7400".into(),
        }
        .into();
        let back = PeerError::Remote(outcome_status(failed_outcome(&not_leader)));
        assert!(back.retryable(), "{back}");
        let PeerError::Remote(s) = &back else {
            unreachable!()
        };
        assert_eq!(s.code(), not_leader.code());
        assert_eq!(s.message(), not_leader.message());
        assert_eq!(s.metadata().get(LEADER_HINT).unwrap(), "10.0.0.1:7400");
        let bad = tonic::Status::invalid_argument("command_json: expected value");
        let back = PeerError::Remote(outcome_status(failed_outcome(&bad)));
        assert!(!back.retryable());
        assert!(back.to_string().contains("expected value"), "{back}");
    }
}
